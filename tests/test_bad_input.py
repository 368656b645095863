"""Bad input, one test per case: each asserts the error names the culprit (file, key, value) or that a repair
is counted, and that nothing was half-written (no corpus in the cache, no results file, no temp file).

Audio fixtures are written here with soundfile in FLEURS' original layout ({config}/{split}.tsv +
{config}/audio/{split}/*.wav), the simplest local layout every loader shares its audio path with
(cl_asr.data.corpora.common.build_dataset / read_audio). CLI cases call `cl_asr.cli.main` in-process (what
`python run_suite.py` runs), except one that runs the script itself to check no traceback reaches the user.
"""
import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cl_asr.cli import main
from cl_asr.config import ConfigError
from cl_asr.data import corpus as corpus_mod
from cl_asr.data.corpora import (
    CorpusError, MissingDataError, load_ascend, load_common_voice, load_fleurs, load_librispeech_dir, load_mls,
)
from cl_asr.registry import UnknownNameError
from cl_asr.scenarios import load_scenario_builder

REPO = Path(__file__).resolve().parent.parent
LOGGER = "cl_asr.data.corpora"


# ---------------------------------------------------------------------------------------------- helpers

def tone(seconds=0.3, rate=16_000, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = (0.2 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def fleurs(root, rows, config="ast_es", split="test"):
    """FLEURS' original layout; rows: (file name, transcript, seconds, rate, channels) or (file name,
    transcript, None) for a file this helper must not write. Returns the audio folder."""
    audio = root / config / "audio" / split
    audio.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (fname, text, seconds, *more) in enumerate(rows):
        rate, channels = (more + [16_000, 1][len(more):])[:2]
        if seconds is not None:
            sf.write(str(audio / fname), tone(seconds, rate, channels), rate)
        lines.append(f"{i}\t{fname}\t{text}\t{text.lower()}\tx\t{int((seconds or 0) * rate)}\tFEMALE")
    (root / config / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return audio


def files(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private CL_ASR_CACHE; `nothing_written()` checks it holds no corpus, whole or partial."""
    path = tmp_path / "cache"
    monkeypatch.setenv("CL_ASR_CACHE", str(path))
    return path


def assert_nothing_written(cache: Path, data: Path | None = None, before: list | None = None):
    assert files(cache) == [], f"left in the cache: {files(cache)}"
    if data is not None:
        assert files(data) == before, "the loader wrote into the data directory"


def load(root):
    return load_fleurs("ast_es", "test", data_dir=str(root))


def run_cli(capsys, *args):
    rc = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def no_results(out: Path) -> bool:
    """The run directory was not left behind (in particular no results.jsonl / run.json)."""
    return not out.exists()  # the runner removes a directory it made only to probe that it can write


CORPUS_SCENARIO = """\
name: bad_fixture
builder: corpus
description: bad-input fixture
data_source: a FLEURS-layout fixture in tmp
metric: cer
base_languages: []
experiences:
  - {{name: ast, language: ast, loader: fleurs, args: {{config: ast_es, data_dir: "{data}"}},
     train_split: train, test_split: test, decode_language: es}}
profiles:
  micro: {{backbone: tiny:random, n_train: 2, n_test: 2, epochs: 1, batch_size: 2, max_new_tokens: 4,
          encoder_window_seconds: {window}, lid_utterances: 2}}
"""


def corpus_scenario(tmp_path, data, window=30):
    path = tmp_path / "bad_fixture.yaml"
    path.write_text(CORPUS_SCENARIO.format(data=data, window=window), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- 1-4: unreadable

def test_01_missing_audio_file(tmp_path, cache):
    data = tmp_path / "data"
    audio = fleurs(data, [("a.wav", "Bones.", 0.3), ("gone.wav", "Dalgún día.", None)])
    before = files(data)
    with pytest.raises(MissingDataError) as err:
        load(data)
    msg = str(err.value)
    assert str(audio / "gone.wav") in msg and "is missing" in msg
    assert str(data / "ast_es" / "test.tsv") in msg  # which listing named it
    assert_nothing_written(cache, data, before)


def test_02_empty_zero_byte_audio_file(tmp_path, cache):
    data = tmp_path / "data"
    audio = fleurs(data, [("a.wav", "Bones.", 0.3)])
    (audio / "a.wav").write_bytes(b"")
    before = files(data)
    with pytest.raises(CorpusError) as err:
        load(data)
    msg = str(err.value)
    assert msg.startswith(str(audio / "a.wav")) and "the audio file is empty (0 bytes" in msg
    assert_nothing_written(cache, data, before)


def test_03_corrupt_audio_file(tmp_path, cache):
    data = tmp_path / "data"
    audio = fleurs(data, [("a.wav", "Bones.", 1.0)])
    wav = audio / "a.wav"
    whole = wav.read_bytes()
    wav.write_bytes(whole[: len(whole) // 2])  # an incomplete download: libsndfile alone would read half
    before = files(data)
    with pytest.raises(CorpusError) as err:
        load(data)
    msg = str(err.value)
    assert msg.startswith(str(wav)) and "truncated" in msg and f"declares {len(whole) - 44} bytes" in msg
    wav.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt \xff\xff garbage")  # a broken header
    with pytest.raises(CorpusError) as err:
        load(data)
    assert str(err.value).startswith(str(wav)) and "cannot decode audio" in str(err.value)
    assert_nothing_written(cache, data, before)


def test_04_non_audio_file_named_wav(tmp_path, cache):
    data = tmp_path / "data"
    audio = fleurs(data, [("a.wav", "Bones.", 0.3)])
    (audio / "a.wav").write_text("<!DOCTYPE html><html>Access denied</html>\n", encoding="utf-8")
    before = files(data)
    with pytest.raises(CorpusError) as err:
        load(data)
    msg = str(err.value)
    assert msg.startswith(str(audio / "a.wav")) and "not an audio file" in msg and "<!DOCTYPE html>" in msg
    assert_nothing_written(cache, data, before)


# ---------------------------------------------------------------------------------------------- 5-6: repairs

def test_05_wrong_sample_rate_is_resampled_and_counted(tmp_path, cache, caplog):
    data = tmp_path / "data"
    fleurs(data, [("a.wav", "Bones.", 0.5, 44_100), ("b.wav", "Otra.", 0.5, 8_000), ("c.wav", "Tres.", 0.5)])
    before = files(data)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ds = load(data)
    assert [len(r["audio"]["array"]) for r in ds] == [8000, 8000, 8000]  # 0.5 s at 16 kHz each
    assert {int(r["audio"]["sampling_rate"]) for r in ds} == {16_000}
    assert "FLEURS ast_es/test: 1 files resampled from 8000 Hz to 16000 Hz" in caplog.text
    assert "FLEURS ast_es/test: 1 files resampled from 44100 Hz to 16000 Hz" in caplog.text
    assert ds.repairs["resampled_to_16k"] == 2 and ds.repairs["downmixed_to_mono"] == 0
    assert "resampled to 16 kHz" in (REPO / "docs" / "corpora.md").read_text(encoding="utf-8")  # documented
    assert_nothing_written(cache, data, before)


def test_06_stereo_is_downmixed_and_counted_in_the_run_settings(tmp_path, cache, caplog):
    data = tmp_path / "data"
    fleurs(data, [("a.wav", "Bones.", 0.3, 16_000, 2), ("b.wav", "Otra.", 0.3)], split="train")
    fleurs(data, [("c.wav", "Tres.", 0.3, 16_000, 2)], split="test")
    before = files(data)
    builder = load_scenario_builder(str(corpus_scenario(tmp_path, data)))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        scenario = builder.build(builder.profile("micro"), None, None, progress=False)  # decode_language given
    row = scenario.benchmark.test_stream[0].dataset[0]
    assert row["audio"]["array"].ndim == 1
    assert row["audio"]["array"][100] == pytest.approx(0.75 * tone(0.3)[100], abs=1e-3)  # the mean of both channels
    assert "FLEURS ast_es/train: 1 multi-channel files down-mixed to mono" in caplog.text
    # recorded where the user finds it: run.json's scenario_settings
    assert scenario.settings["repairs"] == {"ast/train": {"downmixed_to_mono": 1},
                                            "ast/test": {"downmixed_to_mono": 1}}
    assert "averaged to mono" in (REPO / "docs" / "corpora.md").read_text(encoding="utf-8")  # documented
    assert_nothing_written(cache, data, before)


# ---------------------------------------------------------------------------------------------- 7-9: content

def test_07_nan_or_infinite_samples(tmp_path, cache):
    data = tmp_path / "data"
    audio = fleurs(data, [("a.wav", "Bones.", 0.3)])
    before = files(data)
    for bad in (np.nan, np.inf, -np.inf):
        x = tone(0.3)
        x[[10, 20]] = bad
        sf.write(str(audio / "a.wav"), x, 16_000, subtype="FLOAT")
        with pytest.raises(CorpusError) as err:
            load(data)
        msg = str(err.value)
        assert msg.startswith(str(audio / "a.wav")) and "NaN or infinite samples (2 of 4800)" in msg
    assert_nothing_written(cache, data, before)


def test_08_audio_longer_than_whisper_30s_window_is_left_out_counted_or_refused(tmp_path, cache, caplog, tiny):
    data = tmp_path / "data"
    audio = fleurs(data, [("long.wav", "Llarga.", 31.0), ("short.wav", "Curtia.", 0.3)])
    before = files(data)
    # What the corpus scenarios do (max_seconds = the encoder window, at most 30 s): left out and counted.
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ds = load_fleurs("ast_es", "test", data_dir=str(data), max_seconds=30.0)
    assert list(ds["id"]) == ["fleurs/ast_es/test/short"] and ds.repairs["left_out_longer_than_max_seconds"] == 1
    assert "1 utterances longer than 30 s left out" in caplog.text
    assert f"the longest: {audio / 'long.wav'}" in caplog.text and "31.00 s" in caplog.text
    # nothing fits: an error naming the file and its length
    with pytest.raises(CorpusError) as err:
        load_fleurs("ast_es", "test", data_dir=str(data), max_seconds=30.0, where={"text": "Llarga."})
    assert str(audio / "long.wav") in str(err.value) and "31.00 s" in str(err.value)
    # loaded without a cap, it never reaches the model silently truncated: the collator refuses it
    from cl_asr.cl.collate import ASRCollator

    row = next(r for r in load(data) if r["id"].endswith("long"))
    collator = ASRCollator(tiny.tokenizer, tiny.feature_extractor, {"ast": "es"})
    with pytest.raises(ValueError, match=r"fleurs/ast_es/test/long: 31\.00 s of audio does not fit the 30 s"):
        collator([{**row, "language": "ast"}])
    assert_nothing_written(cache, data, before)


def test_09_empty_or_whitespace_only_transcripts(tmp_path, cache, monkeypatch):
    data = tmp_path / "data"
    for text in ("", "   "):
        audio = fleurs(data, [("a.wav", "Bones.", 0.3), ("b.wav", text, 0.3)])
        with pytest.raises(CorpusError) as err:
            load(data)
        msg = str(err.value)
        assert msg.startswith(f"{audio / 'b.wav'} (listed in {data / 'ast_es' / 'test.tsv'} line 2)")
        assert "empty transcript for utterance fleurs/ast_es/test/b" in msg
    # synthetic corpora: refused before any synthesis, nothing cached
    from cl_asr.data.corpus import CorpusSpec, synthesize_corpus
    from cl_asr.data.tts import Voice

    monkeypatch.setattr(corpus_mod, "speak_in_fresh_process", lambda items: pytest.fail("synthesised"))
    spec = CorpusSpec("t/eo/train", "eo", ("Saluton.", " \t"), (Voice("eo"),))
    with pytest.raises(ValueError, match=r"corpus t/eo/train: sentence 1 is empty or whitespace-only"):
        synthesize_corpus(spec, progress=False)
    assert_nothing_written(cache)


# ---------------------------------------------------------------------------------------------- 10-13: config

def test_10_unknown_language_codes(tmp_path, cache, capsys):
    text = (REPO / "scenarios" / "languages.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "langs.yaml"
    bad.write_text(text.replace("base_languages: [en, de, es]", "base_languages: [en, de, xq]"), encoding="utf-8")
    out = tmp_path / "run"
    rc, err = run_cli(capsys, "run", "--scenario", str(bad), "--profile", "micro", "--strategies", "zero_shot",
                      "--out", str(out), "--no-progress")
    assert rc == 2 and f"{bad}: base_languages: no sentence bank for language 'xq'" in err
    assert no_results(out)
    bad.write_text(text.replace("lid_candidates: [en, de", "lid_candidates: [en, zz"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"langs\.yaml: lid_candidates: 'zz' is not a language Whisper knows"):
        load_scenario_builder(str(bad))
    bad.write_text(text.replace("{eo: auto,", "{eo: esp,"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"decode_language\.eo: 'esp' is neither 'auto' nor a Whisper language"):
        load_scenario_builder(str(bad))
    speakers = (REPO / "scenarios" / "speakers.yaml").read_text(encoding="utf-8")
    assert "\nlanguage: en" in speakers
    bad.write_text(speakers.replace("\nlanguage: en", "\nlanguage: xq"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"langs\.yaml: language: 'xq' is not a language Whisper knows"):
        load_scenario_builder(str(bad))
    corpus = corpus_scenario(tmp_path, tmp_path / "data")
    corpus.write_text(corpus.read_text().replace("decode_language: es", "decode_language: xx"))
    with pytest.raises(ConfigError, match=r"set 'ast': decode_language 'xx' is neither 'auto' nor a Whisper"):
        load_scenario_builder(str(corpus))
    assert_nothing_written(cache)


def test_11_unknown_strategy_or_scenario_names_suggest_the_closest(tmp_path, cache, capsys):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(REPO / "run_suite.py"), "run", "--profile", "micro", "--strategies",
                           "zero_shot,spt_entrie", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown strategy 'spt_entrie'. Did you mean: spt_entire" in proc.stderr
    rc, err = run_cli(capsys, "run", "--profile", "micro", "--scenario", "languges", "--out", str(out))
    assert rc == 2 and "unknown scenario 'languges'. Did you mean: languages?" in err
    yaml_ = corpus_scenario(tmp_path, tmp_path / "data")
    yaml_.write_text(yaml_.read_text().replace("builder: corpus", "builder: corpsu"))
    rc, err = run_cli(capsys, "run", "--profile", "micro", "--scenario", str(yaml_), "--out", str(out))
    assert rc == 2 and f"{yaml_}: key 'builder': unknown scenario builder 'corpsu'. Did you mean: corpus" in err
    with pytest.raises(UnknownNameError, match=r"unknown scenario builder 'corpsu'"):
        load_scenario_builder(str(yaml_))
    assert no_results(out)
    assert_nothing_written(cache)


def test_12_malformed_yaml_and_mistyped_values_name_the_key_and_type(tmp_path, cache, capsys):
    text = (REPO / "scenarios" / "languages.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "langs.yaml"
    out = tmp_path / "run"
    bad.write_text(text.replace("experiences: [eo, ia, ga]", "experiences: [eo, ia, ga"), encoding="utf-8")
    rc, err = run_cli(capsys, "run", "--scenario", str(bad), "--profile", "micro", "--out", str(out))
    assert rc == 2 and f"{bad}: not valid YAML" in err and "line " in err
    for old, new, message in [
        ("    n_train: 4\n", "    n_train: four\n", ".profiles.micro.n_train expects an integer, got 'four'"),
        ("test_pool: 40 ", "test_pool: [40] ", ".test_pool expects an integer, got [40]"),
        ("experiences: [eo, ia, ga]", "experiences: eo", ".experiences expects a list of a string, got 'eo'"),
        ("metric: cer ", "metric: ser ", ".metric expects one of 'cer', 'wer', got 'ser'"),
        ("silence_seconds: 0.3", "silence_seconds: short", ".silence_seconds expects a number, got 'short'"),
        ("test_pool: 40 ", "test_pol: 40 ", "unknown key 'test_pol' (did you mean 'test_pool'?)"),
    ]:
        assert old in text, old
        bad.write_text(text.replace(old, new), encoding="utf-8")
        rc, err = run_cli(capsys, "run", "--scenario", str(bad), "--profile", "micro", "--out", str(out))
        assert rc == 2 and f"error: {bad}" in err and message in err, (message, err)
    assert no_results(out)
    assert_nothing_written(cache)


def test_13_missing_dataset_directory(tmp_path, cache, capsys):
    nowhere = tmp_path / "nowhere"
    for call, where in [
        (lambda: load_fleurs("ast_es", "test", data_dir=str(nowhere)), nowhere / "ast_es" / "test.tsv"),
        (lambda: load_common_voice(str(nowhere), "rw", "test"), nowhere / "rw" / "test.tsv"),
        (lambda: load_mls("german", "test", root=str(nowhere)), nowhere / "mls_german" / "test" / "transcripts.txt"),
        (lambda: load_ascend("test", data_dir=str(nowhere)), nowhere / "test" / "*.parquet"),
        (lambda: load_librispeech_dir(str(nowhere)), nowhere),
    ]:
        with pytest.raises(MissingDataError) as err:
            call()
        assert str(where) in str(err.value) and "download" in str(err.value).lower(), str(err.value)  # how
    # a whole run: a clear error, no results
    out = tmp_path / "run"
    rc, err = run_cli(capsys, "run", "--scenario", str(corpus_scenario(tmp_path, nowhere)), "--profile", "micro",
                      "--strategies", "zero_shot", "--out", str(out), "--no-progress")
    assert rc == 2 and f"FLEURS ast_es/train: not found under data_dir={nowhere}" in err
    assert no_results(out)
    assert not nowhere.exists()
    assert_nothing_written(cache)


# ---------------------------------------------------------------------------------------------- 14: writing

def test_14a_unwritable_output_directory(tmp_path, cache, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    out = afile / "run"  # cannot be created, even as root (chmod does not stop root)
    rc, err = run_cli(capsys, "run", "--profile", "micro", "--strategies", "zero_shot", "--out", str(out),
                      "--no-progress")
    assert rc == 2 and f"cannot write to the output directory {out}: Not a directory" in err
    assert afile.read_text() == "not a directory\n" and files(tmp_path) == ["afile"]
    if os.geteuid() != 0:  # where permissions apply, a read-only directory too
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            rc, err = run_cli(capsys, "run", "--profile", "micro", "--out", str(locked / "run"))
            assert rc == 2 and f"cannot write to the output directory {locked / 'run'}" in err
            assert files(locked) == []
        finally:
            locked.chmod(0o700)
    assert_nothing_written(cache)


def test_14b_full_disk_leaves_no_partial_file(tmp_path, cache, monkeypatch):
    import datasets

    from cl_asr.data.corpus import CorpusSpec, synthesize_corpus
    from cl_asr.data.tts import Voice
    from cl_asr.results import write_json_atomic

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # results files: replaced atomically; a full disk leaves the old file whole and no temp file
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"status": "done"}')
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full)
        with pytest.raises(OSError) as err:
            write_json_atomic(run / "run.json", {"status": "running", "big": "x" * 10_000})
    assert err.value.errno == errno.ENOSPC and "No space left on device" in str(err.value)
    assert f"cannot write {run / 'run.json'}" in str(err.value)
    assert files(run) == ["run.json"] and (run / "run.json").read_text() == '{"status": "done"}'

    # the synthetic corpus cache: the error names where it was writing; no half-written corpus stays
    def half_then_full(self, path, *a, **k):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"\0" * 100)
        full()

    monkeypatch.setattr(corpus_mod, "speak_in_fresh_process", lambda items: [tone(0.2) for _ in items])
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", half_then_full)
    spec = CorpusSpec("t/eo/train", "eo", ("Saluton.", "Dankon."), (Voice("eo"),))
    with pytest.raises(OSError) as err:
        synthesize_corpus(spec, progress=False)
    msg = str(err.value)
    assert err.value.errno == errno.ENOSPC
    assert f"cannot write corpus t/eo/train to the cache {cache / 'corpora' / spec.key()}" in msg
    assert "No space left on device" in msg and "CL_ASR_CACHE" in msg
    assert files(cache) == ["corpora"]  # the folder only: no corpus, no temp folder
