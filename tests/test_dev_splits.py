"""Dev splits (`ScenarioBuilder.build(..., evaluate="dev")`), what the hyper-parameter tuner evaluates: every
scenario's dev sets stand in its test and preservation streams and no test set is synthesised or loaded; dev
sentences are disjoint from the train and test sentences; the training sets are those of a test build; real
corpora read their own dev splits; a leak between train and dev is refused.

The synthetic scenarios are built at their micro profile with the tiny random Whisper (the backbone and window
feature extractor as runner.prepare makes them); corpus fixtures are written here (FLEURS' original layout,
Common Voice, LibriSpeech-format tones)."""
import functools
import io
import json
import textwrap

import numpy as np
import pytest
import soundfile as sf
from helpers import COMMON_VOICE_SCENARIO, write_common_voice_split

from cl_asr.data import corpus as data_corpus
from cl_asr.data.corpora import LOADERS
from cl_asr.data.text_bank import dev_sentences, load_sentences
from cl_asr.scenarios import code_switching, languages, load_scenario_builder, speakers, text_domains
from cl_asr.scenarios import corpus as corpus_builder
from cl_asr.scenarios.base import ProfileConfig
from cl_asr.scenarios.leaks import SplitLeakError, normalize_transcript

RATE = 16_000
SYNTHETIC = ("languages", "code_switching", "speakers", "text_domains")
BUILDER_MODULES = (languages, code_switching, speakers, text_domains)  # each imports synthesize_corpus itself


def tone(seconds=0.4, freq=220.0):
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def windowed():
    """(backbone, feature extractor) for a window, as runner.prepare makes them (a private copy: the window
    changes the model)."""
    from cl_asr.backbones import load_backbone
    from cl_asr.backbones.window import set_encoder_window, window_feature_extractor

    made = {}

    def get(seconds: float):
        if seconds not in made:
            backbone = load_backbone("tiny:random", seed=0)
            set_encoder_window(backbone.model, seconds)
            made[seconds] = (backbone, window_feature_extractor(backbone.feature_extractor, seconds))
        return made[seconds]

    return get


def recording_synthesis(monkeypatch) -> list[str]:
    """The names of every CorpusSpec passed to synthesize_corpus from now on, wherever it is called from."""
    names = []
    real = data_corpus.synthesize_corpus

    def recording(spec, *args, **kwargs):
        names.append(spec.name)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(data_corpus, "synthesize_corpus", recording)
    for module in BUILDER_MODULES:
        monkeypatch.setattr(module, "synthesize_corpus", recording)
    return names


def texts(stream) -> set[str]:
    return {normalize_transcript(t) for exp in stream for ds in _datasets(exp) for t in ds["text"]}


def _datasets(exp):
    from cl_asr.scenarios.base import Scenario

    return Scenario.set_datasets(exp)


def ids(stream) -> list[str]:
    return [i for exp in stream for ds in _datasets(exp) for i in ds["id"]]


def train_checksums(scenario) -> dict[str, str]:
    return {k: v for k, v in scenario.checksums().items() if k.startswith("train/")}


# ---------------------------------------------------------------------------------------------- synthetic scenarios

@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_dev_build_synthesises_no_test_set_and_keeps_train_sets(name, windowed, monkeypatch):
    builder = load_scenario_builder(name)
    profile = builder.profile("micro")
    backbone, fe = windowed(profile.encoder_window_seconds)
    test_sc = builder.build(profile, backbone, fe, progress=False)  # evaluate="test", the default

    names = recording_synthesis(monkeypatch)
    dev_sc = builder.build(profile, backbone, fe, progress=False, evaluate="dev")
    assert names, "the dev build synthesised nothing (the recorder is not where the builder calls it)"
    test_corpora = [n for n in names if n.endswith("/test") or "/test/" in n]
    assert not test_corpora, f"a dev build synthesised test corpora: {test_corpora}"
    assert any(n.endswith("/dev") or "/dev/" in n for n in names)

    assert (test_sc.settings["evaluated_split"], dev_sc.settings["evaluated_split"]) == ("test", "dev")
    assert dev_sc.evaluated_split == "dev" and test_sc.evaluated_split == "test"
    assert dev_sc.targets == test_sc.targets  # the same Target names: the runner works on it unmodified
    assert train_checksums(dev_sc) == train_checksums(test_sc)  # the same training sets, row for row
    assert set(dev_sc.checksums()) == set(test_sc.checksums())
    for stream in ("test_stream", "preservation_stream"):
        dev_stream = getattr(dev_sc.benchmark, stream)
        assert [len(e.dataset) for e in dev_stream] == [profile.n_dev] * len(dev_stream)
        assert all("/dev" in i for i in ids(dev_stream)) and not any("/test" in i for i in ids(dev_stream))

    b = test_sc.benchmark
    used = texts(b.train_stream) | texts(b.test_stream) | texts(b.preservation_stream)
    dev = texts(dev_sc.benchmark.test_stream) | texts(dev_sc.benchmark.preservation_stream)
    assert dev and not dev & used, f"dev sentences also trained or tested on: {sorted(dev & used)[:3]}"
    dev_sc.check_disjoint()  # train against dev, as train against test


def test_n_dev_defaults_to_n_test_and_is_validated():
    assert ProfileConfig(n_test=7).n_dev == 7 and ProfileConfig(n_test=7, n_dev=3).n_dev == 3
    with pytest.raises(ValueError, match="n_dev must be at least 1"):
        ProfileConfig(n_dev=0)


def test_a_profile_without_room_for_dev_sentences_is_refused_before_any_synthesis(monkeypatch):
    names = recording_synthesis(monkeypatch)
    builder = load_scenario_builder("languages")  # full: n_train 140 is the whole train pool
    with pytest.raises(ValueError, match=r"uses 140 of the pool's 140 sentences .* none is left for a dev set"):
        builder.build(builder.profile("full"), None, None, progress=False, evaluate="dev")
    cs = load_scenario_builder("code_switching")
    too_many = ProfileConfig(n_train=200, n_test=3, n_dev=20)  # zh-en has 208 training sentences
    with pytest.raises(ValueError, match=r"zh-en \(train pool\).*lower the profile's n_dev to at most 8"):
        cs.build(too_many, None, None, progress=False, evaluate="dev")
    assert not [n for n in names if "zh-en" in n]
    with pytest.raises(ValueError, match=r"evaluate must be one of test, dev, got 'valid'"):
        builder.build(builder.profile("micro"), None, None, progress=False, evaluate="valid")


def test_english_dev_sentences_are_not_in_the_bank():
    dev = dev_sentences("en")
    assert len(dev) >= 40 and len(set(dev)) == len(dev)
    assert not {normalize_transcript(s) for s in dev} & {normalize_transcript(s) for s in load_sentences("en")}
    assert not any(ch.isdigit() for s in dev for ch in s)  # numbers spelled out, as in the bank
    with pytest.raises(FileNotFoundError, match="no dev sentences for language 'eo'"):
        dev_sentences("eo")


# ---------------------------------------------------------------------------------------------- real corpora

def fleurs_split(base, config, split, rows):
    """FLEURS' original layout: header-less TSV + audio/{split}/*.wav; rows: (id, file, transcript, freq)."""
    lines = []
    for sid, fname, raw, freq in rows:
        wav = base / config / "audio" / split / fname
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(wav), tone(0.4, freq), RATE)
        lines.append(f"{sid}\t{fname}\t{raw}\t{raw.lower().strip('.')}\t{' '.join(raw.lower())} |\t6400\tFEMALE")
    (base / config / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


FLEURS_SCENARIO = """\
name: fleurs_dev_fixture
builder: corpus
description: FLEURS dev fixture
data_source: FLEURS fixture in tmp
metric: cer
base_languages:
  - {name: en, language: en, loader: fleurs, args: {config: en_us, data_dir: "${FLEURS_DEV_FIXTURE}"}}
experiences:
  - {name: ast, language: ast, loader: fleurs, args: {config: ast_es, data_dir: "${FLEURS_DEV_FIXTURE}"},
     train_split: train, test_split: test, dev_split: dev, decode_language: es}
profiles:
  micro: {backbone: tiny:random, n_train: 3, n_test: 2, n_dev: 2, epochs: 1, batch_size: 2, max_new_tokens: 4,
          encoder_window_seconds: 1.0, lid_utterances: 2}
"""


def fleurs_fixture(tmp_path, monkeypatch, dev_is_train_copy=False):
    """ast_es train + dev, en_us dev; NO test split anywhere: reading one would fail."""
    data = tmp_path / "fleurs"
    train = [(i, f"1{i}.wav", f"Frase {i}.", 200.0 + 20 * i) for i in range(3)]
    fleurs_split(data, "ast_es", "train", train)
    fleurs_split(data, "ast_es", "dev", train if dev_is_train_copy else
                 [(10 + i, f"2{i}.wav", f"Desendolcu {i}.", 300.0 + 20 * i) for i in range(2)])
    fleurs_split(data, "en_us", "dev", [(20 + i, f"3{i}.wav", f"Dev {i}.", 400.0 + 20 * i) for i in range(2)])
    path = tmp_path / "fleurs_dev_fixture.yaml"
    path.write_text(FLEURS_SCENARIO, encoding="utf-8")
    monkeypatch.setenv("FLEURS_DEV_FIXTURE", str(data))
    return path


def recording_loads(monkeypatch) -> list[tuple[str, str]]:
    """(loader, split) of every set the corpus builder loads from now on."""
    loads = []

    def recorder(key, loader):
        @functools.wraps(loader)  # the builder reads the loader's signature
        def recording(*args, **kwargs):
            loads.append((key, kwargs.get("split")))
            return loader(*args, **kwargs)
        return recording

    for key, loader in list(LOADERS.items()):
        monkeypatch.setitem(corpus_builder.LOADERS, key, recorder(key, loader))
    return loads


def test_corpus_builder_reads_the_dev_split_and_never_the_test_split(tmp_path, monkeypatch, windowed):
    path = fleurs_fixture(tmp_path, monkeypatch)
    loads = recording_loads(monkeypatch)
    builder = load_scenario_builder(str(path))
    backbone, fe = windowed(1.0)
    sc = builder.build(builder.profile("micro"), backbone, fe, progress=False, evaluate="dev")
    assert sorted(set(loads)) == [("fleurs", "dev"), ("fleurs", "train")]
    assert ids(sc.benchmark.test_stream) == ["fleurs/ast_es/dev/20", "fleurs/ast_es/dev/21"]
    assert ids(sc.benchmark.preservation_stream) == ["fleurs/en_us/dev/30", "fleurs/en_us/dev/31"]
    assert ids(sc.benchmark.train_stream) == ["fleurs/ast_es/train/10", "fleurs/ast_es/train/11",
                                              "fleurs/ast_es/train/12"]
    s = sc.settings
    assert s["evaluated_split"] == "dev" and s["dev_splits"] == {"ast": "dev", "en": "dev"}
    assert s["utterances"]["per_set"] == {"train/ast": 3, "test/ast": 2, "preservation/en": 2}
    assert s["utterances"]["dev_per_set"] == 2 and "test_per_set" not in s["utterances"]
    assert sc.experience_names == ["ast"] and sc.preservation_names == ["en"]
    sc.check_disjoint()
    with pytest.raises(FileNotFoundError, match=r"FLEURS ast_es/test: not found"):  # there is no test split
        builder.build(builder.profile("micro"), backbone, fe, progress=False)


def test_fleurs_dev_is_read_under_either_name_in_either_layout(tmp_path):
    import datasets

    fleurs_split(tmp_path, "ast_es", "dev", [(1, "a.wav", "Bones.", 300.0)])  # original layout: dev.tsv
    assert list(LOADERS["fleurs"]("ast_es", "validation", data_dir=str(tmp_path))["id"]) == \
        ["fleurs/ast_es/validation/a"]
    buf = io.BytesIO()
    sf.write(buf, tone(0.3, 350.0), RATE, format="WAV")
    pq = tmp_path / "pq" / "kea_sn" / "validation" / "0000.parquet"  # the hub conversion's name
    pq.parent.mkdir(parents=True)
    datasets.Dataset.from_dict({"id": [7], "path": ["k.wav"], "audio": [{"bytes": buf.getvalue(), "path": "k.wav"}],
                                "raw_transcription": ["Kel."], "transcription": ["kel"]}).to_parquet(str(pq))
    ds = LOADERS["fleurs"]("kea_sn", "dev", data_dir=str(tmp_path / "pq"))
    assert list(ds["id"]) == ["fleurs/kea_sn/dev/k"] and ds[0]["text"] == "Kel."


def test_every_corpus_set_has_its_corpus_dev_split():
    expected = {"fleurs_unseen": "dev", "cv_clmasr": "dev", "ascend": "validation"}
    for name, split in expected.items():
        cfg = load_scenario_builder(name).config
        assert {s.dev_split for s in cfg.experiences + cfg.base_languages} == {split}, name
    mls = load_scenario_builder("mls").config
    assert {s.dev_split for s in mls.experiences} == {"dev"} and mls.base_languages[0].dev_split == "dev-clean"
    assert load_scenario_builder("librimix").config.source.dev_root == "${LIBRISPEECH_DEV_DIR}"


# ---------------------------------------------------------------------------------------------- leaks

def test_a_leak_between_train_and_dev_is_refused(tmp_path, monkeypatch, windowed):
    path = fleurs_fixture(tmp_path, monkeypatch, dev_is_train_copy=True)  # dev.tsv: the training utterances
    builder = load_scenario_builder(str(path))
    backbone, fe = windowed(1.0)
    sc = builder.build(builder.profile("micro"), backbone, fe, progress=False, evaluate="dev")
    with pytest.raises(SplitLeakError, match=r"train/ast and test/ast share 2 utterance\(s\) by audio content "
                                             r"\(e\.g\. ids fleurs/ast_es/train/10 = fleurs/ast_es/dev/10"):
        sc.check_disjoint()


def test_common_voice_dev_split_keeps_its_sentence_promise_against_train(tmp_path):
    """Common Voice's dev split holds no training sentence: the same client reading one there (other audio) is
    refused, as in its test split; the dev set's promise group is the one of the stream it stands in."""
    write_common_voice_split(tmp_path, "train", [("a.wav", "c1", "Saluton mondo.", 200.0), ("b.wav", "c2", "Bonan tagon.", 250.0)])
    write_common_voice_split(tmp_path, "dev", [("c.wav", "c3", "Saluton mondo.", 300.0), ("d.wav", "c4", "Ĝis.", 350.0)])
    path = tmp_path / "cv.yaml"
    path.write_text(COMMON_VOICE_SCENARIO.format(root=tmp_path), encoding="utf-8")
    builder = load_scenario_builder(str(path))
    sc = builder.build(builder.profile("micro"), None, None, progress=False, evaluate="dev")
    assert sc.disjoint == {"sentences": {("train", 0): "common_voice/eo", ("test", 0): "common_voice/eo"}}
    assert ids(sc.benchmark.test_stream) == ["cv/eo/dev/c", "cv/eo/dev/d"]
    sc.check_disjoint()  # another client reading a training sentence is no leak
    write_common_voice_split(tmp_path, "dev", [("c.wav", "c1", "saluton, mondo", 300.0), ("d.wav", "c4", "Ĝis.", 350.0)])
    sc = builder.build(builder.profile("micro"), None, None, progress=False, evaluate="dev")
    with pytest.raises(SplitLeakError, match=r"train/eo and test/eo share 1 \(transcript, speaker\) pair\(s\) "
                                             r"\(e\.g\. 'saluton mondo' by c1: cv/eo/train/a = cv/eo/dev/c\)"):
        sc.check_disjoint()


# ---------------------------------------------------------------------------------------------- librispeech source

SPEAKERS_SCENARIO = """\
name: ls_dev_fixture
builder: speakers
description: LibriSpeech-source dev fixture
language: en
metric: wer
source: {kind: librispeech, train_root: "${LS_DEV_FIXTURE}/train", test_root: "${LS_DEV_FIXTURE_UNSET}",
         dev_root: "${LS_DEV_FIXTURE}/dev"}
experiences:
  - {name: 2mix, talkers: 2, overlap: 1.0, sir_db: 0, speakers: 2}
profiles:
  micro: {backbone: tiny:random, n_train: 2, n_test: 2, n_dev: 2, epochs: 1, batch_size: 2, max_new_tokens: 4,
          encoder_window_seconds: 5}
"""


def tone_librispeech(root, speakers, freq):
    for k, spk in enumerate(speakers):
        d = root / spk / "100"
        d.mkdir(parents=True)
        for u in range(3):
            sf.write(str(d / f"{spk}-100-{u:04d}.flac"), tone(0.4 + 0.1 * u, freq + 30 * k + 7 * u), RATE)
        (d / f"{spk}-100.trans.txt").write_text("".join(f"{spk}-100-{u:04d} WORDS {spk} {u}\n" for u in range(3)),
                                                encoding="utf-8")


def test_librispeech_source_reads_dev_root_and_never_test_root(tmp_path, monkeypatch):
    import torch

    tone_librispeech(tmp_path / "ls" / "train", ["11", "12"], 200.0)
    tone_librispeech(tmp_path / "ls" / "dev", ["21", "22"], 500.0)
    path = tmp_path / "ls.yaml"
    path.write_text(textwrap.dedent(SPEAKERS_SCENARIO), encoding="utf-8")
    monkeypatch.setenv("LS_DEV_FIXTURE", str(tmp_path / "ls"))
    monkeypatch.delenv("LS_DEV_FIXTURE_UNSET", raising=False)  # expanding test_root would fail
    builder = load_scenario_builder(str(path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # resemblyzer's LSTM is much slower with 2 threads on a busy 2-core machine
    try:
        sc = builder.build(builder.profile("micro"), None, None, progress=False, evaluate="dev")
    finally:
        torch.set_num_threads(threads)
    assert sc.settings["evaluated_split"] == "dev"
    source = sc.settings["source"]
    assert source["dev_root"] == str(tmp_path / "ls" / "dev") and "test_root" not in source
    groups = sc.settings["conditions"]["2mix"]["speakers"]
    assert set(groups) == {"train", "dev"} and sorted(groups["train"]) == ["11", "12"]
    assert sorted(groups["dev"]) == ["21", "22"]
    dev_rows = [e.dataset[i] for e in sc.benchmark.test_stream for i in range(len(e.dataset))]
    assert all(r["id"].startswith("ls_dev_fixture/2mix/dev/") for r in dev_rows)
    assert all(src.startswith("librispeech/2") for r in dev_rows
               for src in [json.loads(r["mix"])["sources"]["target"]])
    sc.check_disjoint()
    with pytest.raises(Exception, match="LS_DEV_FIXTURE_UNSET"):  # a test build needs test_root: it is unset
        builder.build(builder.profile("micro"), None, None, progress=False)


def test_a_librispeech_source_without_dev_root_says_so():
    builder = load_scenario_builder("librimix")
    builder.config.source.dev_root = None
    with pytest.raises(ValueError, match=r"evaluate=dev, but source.dev_root is not set"):
        builder.build(builder.profile("micro"), None, None, progress=False, evaluate="dev")


# ---------------------------------------------------------------------------------------------- the runner

def test_a_dev_run_records_evaluate_and_decodes_only_dev_sets(tmp_path, monkeypatch):
    from cl_asr.runner import RunRequest, run_benchmark

    path = fleurs_fixture(tmp_path, monkeypatch)  # no test split on disk at all
    loads = recording_loads(monkeypatch)
    out = run_benchmark(RunRequest(scenario=str(path), strategies=["zero_shot"], profile="micro",
                                   out_dir=tmp_path / "run", progress=False, report=False, evaluate="dev"))
    meta = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert meta["config"]["evaluate"] == "dev" and meta["scenario_settings"]["evaluated_split"] == "dev"
    assert {split for _, split in loads} == {"train", "dev"}
    predicted = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    decoded = [i for p in predicted for i in p["ids"]]
    assert decoded and all(i.startswith(("fleurs/ast_es/dev/", "fleurs/en_us/dev/")) for i in decoded)
    assert {p["eval_on"] for p in predicted} == {"ast", "en"}  # the set names of a test run
