"""No leak between splits (cl_asr/scenarios/leaks.py): a scenario whose training and evaluated sets share
utterances (by audio content), or, where its builder promises otherwise, sentences or voices, is refused before
any work with an error naming the two sets; and loaders say which audio formats they read.

Fixtures are written here: LibriSpeech / Common Voice / MLS layouts with soundfile, tiny datasets in the
synthetic corpora's schema. The built-in synthetic scenarios are built at their micro profile."""
import shutil
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import soundfile as sf
from helpers import COMMON_VOICE_SCENARIO, write_common_voice_split

from cl_asr.cli import main
from cl_asr.config import ConfigError
from cl_asr.core import Target
from cl_asr.data.corpora import CorpusError, load_librispeech_dir, load_mls
from cl_asr.data.corpus import dataset_features
from cl_asr.scenarios import load_scenario_builder
from cl_asr.scenarios.base import ProfileConfig, ScenarioBuilder
from cl_asr.scenarios.leaks import SplitLeakError, check_disjoint, normalize_transcript

RATE = 16_000


def tone(seconds=0.3, freq=220.0):
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- whole runs

def librispeech(root, ext="flac"):
    """A LibriSpeech-format directory: 2 speakers, 3 utterances, each a tone of its own pitch."""
    utts = [("1089", "134686", 0, "HE HOPED THERE WOULD BE STEW"), ("1089", "134686", 1, "STUFF IT INTO YOU"),
            ("121", "121726", 0, "ALSO A POPULAR CONTRIVANCE")]
    for k, (spk, ch, u, _) in enumerate(utts):
        d = root / spk / ch
        d.mkdir(parents=True, exist_ok=True)
        sf.write(str(d / f"{spk}-{ch}-{u:04d}.{ext}"), tone(0.3, 200.0 + 40 * k), RATE)
    for spk, ch in {(s, c) for s, c, _, _ in utts}:
        (root / spk / ch / f"{spk}-{ch}.trans.txt").write_text(
            "".join(f"{s}-{c}-{u:04d} {t}\n" for s, c, u, t in utts if (s, c) == (spk, ch)), encoding="utf-8")


LIBRI_SCENARIO = """\
name: leak_fixture
builder: corpus
description: a LibriSpeech-format fixture
data_source: LibriSpeech-format directories in tmp
metric: wer
base_languages: []
experiences:
  - {{name: ls, language: en, loader: librispeech_dir, args: {{root: "{root}"}}, train_split: train,
     test_split: test, decode_language: en}}
profiles:
  micro: {{backbone: tiny:random, n_train: 3, n_test: 2, epochs: 1, batch_size: 2, max_new_tokens: 4,
          encoder_window_seconds: 5, lid_utterances: 2}}
"""


def libri_scenario(tmp_path, root):
    path = tmp_path / "leak_fixture.yaml"
    path.write_text(LIBRI_SCENARIO.format(root=root), encoding="utf-8")
    return path


def test_a_split_leak_is_refused_naming_the_sets_and_nothing_is_written(tmp_path, capsys):
    """The motivating bug: the test split is a copy of the training split (real recordings laid out as
    LibriSpeech); every test utterance is a training utterance. The run stops with one error line, status 2."""
    librispeech(tmp_path / "data" / "train")
    shutil.copytree(tmp_path / "data" / "train", tmp_path / "data" / "test")
    yaml_ = libri_scenario(tmp_path, f"{tmp_path / 'data'}/{{split}}")
    out = tmp_path / "run"
    rc = main(["run", "--scenario", str(yaml_), "--profile", "micro", "--backbone", "tiny:random",
               "--strategies", "zero_shot", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    line = next(x for x in err.splitlines() if x.startswith("error: "))
    assert "train/ls and test/ls share 2 utterance(s) by audio content" in line
    assert "librispeech/1089-134686-0000" in line and "librispeech/1089-134686-0001" in line
    assert "{split}" in line  # what to fix
    assert not out.exists()  # refused before the run directory was opened


def test_a_directory_loader_without_split_placeholder_is_refused_when_the_file_loads(tmp_path, capsys):
    yaml_ = libri_scenario(tmp_path, str(tmp_path / "data"))
    with pytest.raises(ConfigError, match=r"experience 'ls': loader 'librispeech_dir' takes no split, .*'train' "
                                          r"and test_split 'test' would read the same data.*'\{split\}'"):
        load_scenario_builder(str(yaml_))
    out = tmp_path / "run"
    rc = main(["run", "--scenario", str(yaml_), "--profile", "micro", "--out", str(out), "--no-progress"])
    assert rc == 2 and "would read the same data" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------------------------------------- the check itself

def utterances(name, rows, audio=True):
    """A set in the synthetic corpora's schema; rows: (text, speaker, freq)."""
    cols = {"id": [f"{name}/{i}" for i in range(len(rows))], "text": [r[0] for r in rows],
            "language": ["en"] * len(rows)}
    if not audio:
        return datasets.Dataset.from_dict(cols)
    cols.update(speaker=[r[1] for r in rows], duration=[0.3] * len(rows),
                audio=[{"array": tone(0.3, r[2]), "sampling_rate": RATE} for r in rows])
    ds = datasets.Dataset.from_dict(cols, features=dataset_features())
    return ds.with_format("numpy", columns=["audio"], output_all_columns=True)


def scenario(train, test, preservation=(), disjoint=None):
    targets = {(s, i): Target(s, i, f"x{i}", "en", "en") for s, sets in
               (("train", train), ("test", test)) for i in range(len(sets))}
    targets.update({("preservation", i): Target("preservation", i, f"p{i}", "en", "en")
                    for i in range(len(preservation))})
    builder = ScenarioBuilder(SimpleNamespace(name="fixture", metric="wer"), "fixture")
    return builder.assemble(ProfileConfig(n_train=2, n_test=2), list(train), list(test),
                            list(preservation), targets, {}, disjoint=disjoint)


def test_same_audio_is_refused_whatever_the_promises_and_distinct_audio_passes():
    train = utterances("tr", [("one", "a", 200.0), ("two", "a", 300.0)])
    check_disjoint(scenario([train], [utterances("te", [("three", "a", 400.0)])]))
    leak = utterances("te", [("other words", "b", 300.0)])  # the training set's second recording, relabelled
    with pytest.raises(SplitLeakError, match=r"train/x0 and test/x0 share 1 utterance\(s\) by audio content "
                                             r"\(e\.g\. ids tr/1 = te/0\)"):
        check_disjoint(scenario([train], [leak]))
    # across experiences and against preservation sets too
    with pytest.raises(SplitLeakError, match=r"train/x0 and preservation/p0 share 1 utterance"):
        check_disjoint(scenario([train], [utterances("te", [("x", "a", 500.0)])], [leak]))


def test_same_sentence_by_the_same_speaker_with_other_audio_is_refused_where_promised():
    train = utterances("tr", [("He hoped there would be stew.", "1089", 200.0), ("two", "1089", 250.0)])
    test = utterances("te", [("he hoped there would be STEW", "1089", 400.0), ("three", "7", 450.0)])
    check_disjoint(scenario([train], [test]))  # audio differs and nothing is promised: passes
    with pytest.raises(SplitLeakError, match=r"train/x0 and test/x0 share 1 \(transcript, speaker\) pair\(s\) "
                                             r"\(e\.g\. 'he hoped there would be stew' by 1089: tr/0 = te/0\)"):
        check_disjoint(scenario([train], [test], disjoint={"sentences": True}))
    other_voice = utterances("te", [("He hoped there would be stew.", "7", 400.0)])
    check_disjoint(scenario([train], [other_voice], disjoint={"sentences": True}))  # another speaker may say it
    with pytest.raises(SplitLeakError, match=r"share 1 speaker\(s\) \(e\.g\. 1089: tr/0 = te/0\).*disjoint voices"):
        check_disjoint(scenario([train], [test], disjoint={"voices": True}))
    unknown = utterances("te", [("He hoped there would be stew.", "unknown", 400.0)])
    trained = utterances("tr", [("He hoped there would be stew.", "unknown", 200.0)])
    check_disjoint(scenario([trained], [unknown], disjoint={"sentences": True, "voices": True}))  # no ids


def test_text_only_training_sets_are_compared_by_transcript():
    train = utterances("tr", [("Play Yesterday by the Beatles",), ("call mum",)], audio=False)
    test = utterances("te", [("play yesterday, by the beatles!", "en+m2", 300.0)])
    check_disjoint(scenario([train], [test]))  # no promise: audio only, and the training set has none
    with pytest.raises(SplitLeakError, match=r"train/x0 and test/x0 share 1 transcript\(s\) \(e\.g\. "
                                             r"'play yesterday by the beatles': tr/0 = te/0\)"):
        check_disjoint(scenario([train], [test], disjoint={"sentences": True}))


def test_a_promise_by_group_holds_only_within_the_group():
    train = utterances("tr", [("same words", "s1", 200.0)])
    test = utterances("te", [("same words", "s1", 300.0)])
    apart = {"voices": {("train", 0): "mls/german", ("test", 0): "mls/french"}}
    check_disjoint(scenario([train], [test], disjoint=apart))
    together = {"voices": {("train", 0): "mls/german", ("test", 0): "mls/german"}}
    with pytest.raises(SplitLeakError, match=r"share 1 speaker"):
        check_disjoint(scenario([train], [test], disjoint=together))


def test_a_dev_stream_is_checked_against_the_test_sets():
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils import AvalancheDataset

    sc = scenario([utterances("tr", [("one", "a", 200.0)])], [utterances("te", [("two", "a", 300.0)])])
    dev = utterances("dv", [("two", "a", 300.0)])
    sc.benchmark = benchmark_from_datasets(**{s: [e.dataset for e in sc.benchmark.streams[s]]
                                              for s in ("train", "test", "preservation")},
                                           dev=[AvalancheDataset([dev])])
    sc.targets[("dev", 0)] = Target("dev", 0, "x0", "en", "en")
    with pytest.raises(SplitLeakError, match=r"dev/x0 and test/x0 share 1 utterance"):
        check_disjoint(sc)


def test_transcripts_are_normalised():
    assert normalize_transcript("  He hoped — there\twould be STEW!! ") == "he hoped there would be stew"
    assert normalize_transcript("你好，世界。") == "你好 世界"


# ---------------------------------------------------------------------------------------------- the builders

@pytest.mark.parametrize("name,promise", [("languages", {"sentences": True, "voices": True}),
                                          ("code_switching", {"sentences": True, "voices": True}),
                                          ("text_domains", {"sentences": True}),
                                          ("speakers", {"sentences": True})])
def test_built_in_synthetic_scenarios_pass_the_check(name, promise, tiny):
    builder = load_scenario_builder(name)
    sc = builder.build(builder.profile("micro"), tiny, tiny.feature_extractor, progress=False)
    assert sc.disjoint == promise
    sc.check_disjoint()
    if name == "speakers":  # voices are shared between train and test by design: the check sees it
        sc.disjoint = {"voices": True}
        with pytest.raises(SplitLeakError, match=r"train/2mix and test/2mix share 3 speaker\(s\)"):
            sc.check_disjoint()


def test_common_voice_official_splits_promise_disjoint_sentences(tmp_path):
    """Common Voice's train/dev/test hold no sentence twice: the same client reading a training sentence in
    the test split (a re-recording, other audio) is refused; another client reading it is not."""
    write_common_voice_split(tmp_path, "train", [("a.wav", "c1", "Saluton mondo.", 200.0), ("b.wav", "c2", "Bonan tagon.", 250.0)])
    write_common_voice_split(tmp_path, "test", [("c.wav", "c3", "Saluton mondo.", 300.0), ("d.wav", "c4", "Ĝis.", 350.0)])
    path = tmp_path / "cv.yaml"
    path.write_text(COMMON_VOICE_SCENARIO.format(root=tmp_path), encoding="utf-8")
    builder = load_scenario_builder(str(path))
    sc = builder.build(builder.profile("micro"), None, None, progress=False)
    assert sc.disjoint == {"sentences": {("train", 0): "common_voice/eo", ("test", 0): "common_voice/eo"}}
    sc.check_disjoint()
    write_common_voice_split(tmp_path, "test", [("c.wav", "c1", "saluton, mondo", 300.0), ("d.wav", "c4", "Ĝis.", 350.0)])
    sc = builder.build(builder.profile("micro"), None, None, progress=False)
    with pytest.raises(SplitLeakError, match=r"train/eo and test/eo share 1 \(transcript, speaker\) pair\(s\) "
                                             r"\(e\.g\. 'saluton mondo' by c1: cv/eo/train/a = cv/eo/test/c\)"):
        sc.check_disjoint()


# ---------------------------------------------------------------------------------------------- audio formats

def test_librispeech_loader_given_wav_says_it_reads_flac_only(tmp_path):
    librispeech(tmp_path / "dev-wav", ext="wav")
    with pytest.raises(CorpusError) as err:
        load_librispeech_dir(str(tmp_path / "dev-wav"))
    msg = str(err.value)
    assert "reads FLAC only" in msg and "1089-134686-0000.wav is there" in msg
    assert f"the folder {tmp_path / 'dev-wav' / '1089' / '134686'} holds 2 .wav files and no .flac file" in msg
    assert "incomplete copy" not in msg
    (tmp_path / "gone" / "7" / "8").mkdir(parents=True)  # a file simply missing is still reported as missing
    (tmp_path / "gone" / "7" / "8" / "7-8.trans.txt").write_text("7-8-0000 HELLO\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"7-8-0000\.flac: audio file listed by .* is missing"):
        load_librispeech_dir(str(tmp_path / "gone"))


def test_mls_loader_given_wav_says_it_reads_flac_or_opus(tmp_path):
    split = tmp_path / "mls_german" / "test"
    (split / "audio" / "1844" / "931").mkdir(parents=True)
    sf.write(str(split / "audio" / "1844" / "931" / "1844_931_000001.wav"), tone(), RATE)
    (split / "transcripts.txt").write_text("1844_931_000001\thallo welt\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"1844_931_000001\.wav is there: this loader reads FLAC or Opus only"):
        load_mls("german", "test", root=str(tmp_path))


def test_loaders_document_the_formats_they_read():
    from cl_asr.data import corpora

    for name, loader in corpora.LOADERS.items():
        assert "Audio formats:" in (loader.__doc__ or ""), name
    assert "FLAC only" in corpora.load_librispeech_dir.__doc__
