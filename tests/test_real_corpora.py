"""Real-corpus loaders and the `corpus` scenario builder, on tiny fixtures written here in each corpus' own
layout and schema (WAV / FLAC / MP3 / Opus via soundfile, TSVs, parquet via datasets). No network: the hub
fallbacks are exercised with a stand-in for `datasets.load_dataset`."""
import io
import logging
import textwrap

import datasets
import numpy as np
import pytest
import soundfile as sf

from cl_asr.config import ConfigError
from cl_asr.data import corpora as rc
from cl_asr.data.mixing import MixSpec, mix
from cl_asr.data.corpora import (
    CorpusError, MissingDataError, load_ascend, load_common_voice, load_fleurs, load_librispeech_dir, load_mls,
)
from cl_asr.scenarios import load_scenario_builder

COLUMNS = ["id", "audio", "text", "language", "speaker", "duration"]


def tone(seconds=0.4, rate=16_000, channels=1, freq=220.0):
    t = np.arange(int(seconds * rate)) / rate
    x = (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def write(path, seconds=0.4, rate=16_000, channels=1, freq=220.0, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, rate, channels, freq), rate, **kw)
    return path


def encoded(seconds=0.4, rate=16_000, channels=1, fmt="FLAC", freq=220.0):
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, rate, channels, freq), rate, format=fmt)
    return buf.getvalue()


def check_shape(ds, n, language):
    assert len(ds) == n
    assert set(COLUMNS) <= set(ds.column_names)
    assert len(set(ds["id"])) == n and list(ds["id"]) == sorted(ds["id"])
    for row in ds:
        a = row["audio"]["array"]
        assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 1
        assert row["audio"]["sampling_rate"] == 16_000
        assert row["duration"] == pytest.approx(len(a) / 16_000, abs=1e-4)
        assert row["language"] == language and row["text"].strip()


# ---------------------------------------------------------------------------------------------- FLEURS

def fleurs_tsv(base, config, split, rows):
    """FLEURS' original layout: header-less TSV + audio/{split}/*.wav."""
    lines = []
    for sid, fname, raw, seconds in rows:
        write(base / config / "audio" / split / fname, seconds)
        n = int(seconds * 16_000)
        lines.append(f"{sid}\t{fname}\t{raw}\t{raw.lower().strip('.')}\t{' '.join(raw.lower())} |\t{n}\tFEMALE")
    (base / config / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_fleurs_original_layout_sorted_ids_limit_and_filter(tmp_path):
    fleurs_tsv(tmp_path, "ast_es", "test", [
        (1904, "9000000000000000003.wav", "Nun hai nada.", 0.4),
        (1904, "1000000000000000001.wav", "Nun hai nada.", 0.5),  # same sentence, another speaker
        (1905, "5000000000000000002.wav", "Dalgún día.", 0.3),
    ])
    ds = load_fleurs("ast_es", "test", data_dir=str(tmp_path))
    check_shape(ds, 3, "ast")
    assert ds["id"][0] == "fleurs/ast_es/test/1000000000000000001"  # file names: unique, sentence ids are not
    assert ds[0]["text"] == "Nun hai nada." and ds[0]["speaker"] == "unknown"
    assert ds[0]["duration"] == pytest.approx(0.5)
    assert list(load_fleurs("ast_es", "test", data_dir=str(tmp_path), limit=2)["id"]) == list(ds["id"][:2])
    only = load_fleurs("ast_es", "test", data_dir=str(tmp_path), where={"text": "Dalgún día."})
    assert list(only["id"]) == ["fleurs/ast_es/test/5000000000000000002"]
    normalized = load_fleurs("ast_es", "test", data_dir=str(tmp_path), limit=1, text_field="transcription")
    assert normalized[0]["text"] == "nun hai nada"


def test_max_seconds_leaves_long_utterances_out_and_reads_on_to_fill_the_limit(tmp_path, caplog):
    fleurs_tsv(tmp_path, "ast_es", "train", [(1, "1.wav", "Llarga.", 1.5), (2, "2.wav", "Curtia.", 0.3),
                                             (3, "3.wav", "Otra.", 0.4), (4, "4.wav", "   ", 0.4)])
    with caplog.at_level(logging.INFO, logger="cl_asr.data.corpora"):
        ds = load_fleurs("ast_es", "train", data_dir=str(tmp_path), limit=2, max_seconds=1.0)
    assert list(ds["id"]) == ["fleurs/ast_es/train/2", "fleurs/ast_es/train/3"]  # row 4 (empty) is never used
    assert "1 utterances longer than 1 s left out" in caplog.text
    with pytest.raises(CorpusError, match=r"audio/train/4\.wav \(listed in .*train\.tsv line 4\): empty transcript"):
        load_fleurs("ast_es", "train", data_dir=str(tmp_path))


def fleurs_parquet(path, rows):
    """The hub parquet conversion's schema (audio as {bytes, path})."""
    data = {k: [] for k in ("id", "num_samples", "path", "audio", "transcription", "raw_transcription", "gender",
                            "lang_id", "language", "lang_group_id")}
    for sid, fname, raw, audio_bytes in rows:
        for k, v in zip(data, (sid, 16000, fname, {"bytes": audio_bytes, "path": fname}, raw.lower(), raw, 1, 4,
                                 "Asturian", 0)):
            data[k].append(v)
    features = datasets.Features({
        "id": datasets.Value("int32"), "num_samples": datasets.Value("int32"), "path": datasets.Value("string"),
        "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
        "transcription": datasets.Value("string"), "raw_transcription": datasets.Value("string"),
        "gender": datasets.Value("int64"), "lang_id": datasets.Value("int64"), "language": datasets.Value("string"),
        "lang_group_id": datasets.Value("int64"),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = datasets.Dataset.from_dict(data, features=features)
    ds.to_parquet(str(path))
    return ds


def test_fleurs_parquet_resamples_downmixes_and_decodes_only_the_selected_rows(tmp_path, caplog):
    fleurs_parquet(tmp_path / "kea_sn" / "test" / "0000.parquet", [
        (7, "a1.wav", "Kel li é un frazi.", encoded(0.5, 48_000, channels=2)),
        (8, "a2.wav", "Otu frazi.", encoded(0.25, 16_000, fmt="WAV")),
        (9, "z9.wav", "Ka ta lidu.", b"this is no audio file at all"),  # sorts last
    ])
    with caplog.at_level(logging.INFO, logger="cl_asr.data.corpora"):
        ds = load_fleurs("kea_sn", "test", data_dir=str(tmp_path), limit=2)  # never decodes z9
    check_shape(ds, 2, "kea")
    assert ds[0]["id"] == "fleurs/kea_sn/test/a1" and ds[0]["text"] == "Kel li é un frazi."
    assert len(ds[0]["audio"]["array"]) == pytest.approx(8000, abs=2)  # 0.5 s at 48 kHz -> 16 kHz
    assert "1 files resampled from 48000 Hz to 16000 Hz" in caplog.text
    assert "1 multi-channel files down-mixed to mono" in caplog.text
    with pytest.raises(CorpusError, match=r"0000\.parquet row 2 .*fleurs/kea_sn/test/z9.*cannot decode audio"):
        load_fleurs("kea_sn", "test", data_dir=str(tmp_path))


def test_fleurs_hub_fallback_and_its_error(monkeypatch):
    hub = datasets.Dataset.from_dict({
        "id": [3], "path": ["/cache/extracted/ast_es/test/42.wav"],
        "audio": [{"bytes": encoded(0.3), "path": "42.wav"}],
        "transcription": ["hola"], "raw_transcription": ["Hola."],
    })
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or hub)
    ds = load_fleurs("ast_es", "test")
    assert calls == [(("google/fleurs", "ast_es"), {"split": "test", "revision": "refs/convert/parquet"})]
    check_shape(ds, 1, "ast")
    assert ds[0]["id"] == "fleurs/ast_es/test/42" and ds[0]["text"] == "Hola."

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'google/fleurs' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(MissingDataError) as err:
        load_fleurs("ast_es", "test")
    msg = str(err.value)
    assert "google/fleurs" in msg and "ConnectionError" in msg and "data_dir" in msg
    assert "hf download google/fleurs" in msg


def test_fleurs_missing_local_copy_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(MissingDataError) as err:
        load_fleurs("ckb_iq", "train", data_dir=str(tmp_path / "nowhere"))
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str(tmp_path / "nowhere" / "ckb_iq" / "train.tsv") in msg
    assert "train/*.parquet" in msg and "huggingface.co/datasets/google/fleurs" in msg and "audio/train.tar.gz" in msg


def test_fleurs_language_codes():
    assert rc.fleurs_language("ast_es") == "ast"
    assert rc.fleurs_language("cmn_hans_cn") == "zh"  # Whisper's code where FLEURS' differs
    assert rc.fleurs_language("es_419") == "es"


# ---------------------------------------------------------------------------------------------- Common Voice

CV_HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment\textra"


def cv_release(root, locale, rows, header=CV_HEADER, split="test"):
    cols = header.split("\t")
    lines = [header]
    for client, clip, sentence, seconds in rows:
        if seconds is not None:
            write(root / locale / "clips" / clip, seconds, rate=48_000, format="MP3")
        values = {"client_id": client, "path": clip, "sentence": sentence, "up_votes": "2", "down_votes": "0",
                  "gender": "", "locale": locale}
        lines.append("\t".join(values.get(c, "") for c in cols))
    (root / locale).mkdir(parents=True, exist_ok=True)
    (root / locale / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_common_voice_mp3_at_48k_is_resampled(tmp_path, caplog):
    assert rc.mp3_supported()  # libsndfile >= 1.1 in the soundfile wheel: Common Voice's MP3s decode
    cv_release(tmp_path, "rw", [
        ("c2", "common_voice_rw_2.mp3", 'Muraho "neza"', 0.6),  # quotes are plain characters in CV TSVs
        ("c1", "common_voice_rw_1.mp3", "Amakuru?", 0.4),
    ])
    with caplog.at_level(logging.INFO, logger="cl_asr.data.corpora"):
        ds = load_common_voice(str(tmp_path), "rw", "test")
    check_shape(ds, 2, "rw")
    assert list(ds["id"]) == ["cv/rw/test/common_voice_rw_1", "cv/rw/test/common_voice_rw_2"]
    assert ds[0]["speaker"] == "c1" and ds[1]["text"] == 'Muraho "neza"'
    assert ds[1]["duration"] == pytest.approx(0.6, abs=0.06)  # MP3 frames pad a little
    assert "2 files resampled from 48000 Hz to 16000 Hz" in caplog.text
    assert len(load_common_voice(str(tmp_path), "rw", "test", limit=1)) == 1


def test_common_voice_tolerates_missing_optional_columns_and_maps_the_locale(tmp_path):
    cv_release(tmp_path, "fy-NL", [("", "x.mp3", "Goeie moarn", 0.3)], header="path\tsentence")
    ds = load_common_voice(str(tmp_path), "fy-NL", "test")
    check_shape(ds, 1, "fy")
    assert ds[0]["speaker"] == "unknown"


def test_common_voice_missing_release(tmp_path):
    with pytest.raises(MissingDataError) as err:
        load_common_voice(str(tmp_path), "kab", "train")
    msg = str(err.value)
    assert str(tmp_path / "kab" / "train.tsv") in msg and "Mozilla Data Collective" in msg
    assert "datacollective.mozillafoundation.org" in msg


def test_common_voice_bad_rows_name_the_file(tmp_path):
    cv_release(tmp_path, "eo", [("c1", "a.mp3", "   ", 0.3)])
    with pytest.raises(CorpusError, match=r"a\.mp3 \(listed in .*test\.tsv line 2\): empty transcript"):
        load_common_voice(str(tmp_path), "eo")
    cv_release(tmp_path, "eo", [("c1", "gone.mp3", "Saluton", None)])
    with pytest.raises(MissingDataError, match=r"clips/gone\.mp3: audio file listed by"):
        load_common_voice(str(tmp_path), "eo")
    cv_release(tmp_path, "eo", [("c1", "broken.mp3", "Saluton", None)])
    (tmp_path / "eo" / "clips" / "broken.mp3").write_bytes(b"\x00garbage" * 50)
    with pytest.raises(CorpusError, match=r"clips/broken\.mp3 .*cannot decode audio"):
        load_common_voice(str(tmp_path), "eo")


# ---------------------------------------------------------------------------------------------- MLS

def test_mls_original_layout_flac_and_opus(tmp_path):
    split = tmp_path / "mls_german" / "test"
    write(split / "audio" / "1844" / "931" / "1844_931_000001.flac", 0.4)
    write(split / "audio" / "1844" / "931" / "1844_931_000000.flac", 0.3, rate=24_000)
    write(split / "audio" / "2077" / "15" / "2077_15_000003.opus", 0.5, format="OGG", subtype="OPUS")
    (split / "transcripts.txt").write_text(
        "1844_931_000001\tund dann ging er\n1844_931_000000\tes war einmal\n2077_15_000003\tjetzt nicht\n",
        encoding="utf-8")
    ds = load_mls("de", "test", root=str(tmp_path))  # ISO code or MLS' name
    check_shape(ds, 3, "de")
    assert list(ds["id"]) == ["mls/german/test/1844_931_000000", "mls/german/test/1844_931_000001",
                              "mls/german/test/2077_15_000003"]
    assert list(ds["speaker"]) == ["1844", "1844", "2077"]
    assert ds[0]["text"] == "es war einmal"
    assert ds[2]["duration"] == pytest.approx(0.5, abs=0.03)  # Opus decoded by libsndfile


def test_mls_hub_fallback_missing_data_and_english(tmp_path, monkeypatch):
    hub = datasets.Dataset.from_dict({
        "audio": [{"bytes": encoded(0.3), "path": None}], "original_path": ["x"], "transcript": ["hallo welt"],
        "speaker_id": [1844], "chapter_id": [931], "file": ["1844_931_000002.opus"], "id": ["1844_931_000002"],
    })
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda repo, config, split: hub if (repo, config) == ("facebook/multilingual_librispeech",
                                                                              "german") else None)
    ds = load_mls("german", "test")
    check_shape(ds, 1, "de")
    assert ds[0]["id"] == "mls/german/test/1844_931_000002" and ds[0]["speaker"] == "1844"
    with pytest.raises(MissingDataError, match=r"facebook/multilingual_librispeech on the hub has no English"):
        load_mls("english", "test")
    with pytest.raises(MissingDataError) as err:
        load_mls("polish", "dev", root=str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / "mls_polish" / "dev" / "transcripts.txt") in msg and "openslr.org/94" in msg
    with pytest.raises(ValueError, match="MLS has no language 'klingon'"):
        load_mls("klingon", "test", root=str(tmp_path))


# ---------------------------------------------------------------------------------------------- ASCEND

def ascend_parquet(path, rows):
    data = {k: [] for k in ("id", "path", "audio", "transcription", "duration", "language", "original_speaker_id",
                            "session_id", "topic")}
    for uid, text, lang, spk in rows:
        for k, v in zip(data, (uid, f"{uid}.wav", {"bytes": encoded(0.3, fmt="WAV"), "path": f"{uid}.wav"}, text,
                                 0.3, lang, spk, 1, "education")):
            data[k].append(v)
    path.parent.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({
        "id": datasets.Value("string"), "path": datasets.Value("string"),
        "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
        "transcription": datasets.Value("string"), "duration": datasets.Value("float32"),
        "language": datasets.Value("string"), "original_speaker_id": datasets.Value("int64"),
        "session_id": datasets.Value("int64"), "topic": datasets.Value("string"),
    })
    datasets.Dataset.from_dict(data, features=features).to_parquet(str(path))


ASCEND_ROWS = [("00003", "我们 去 shopping 吧", "mixed", 5), ("00001", "你好", "zh", 5),
               ("00002", "it is fine", "en", 6), ("00004", "这个 project 很 难", "mixed", 6)]


def test_ascend_languages_cs_label_and_filter(tmp_path):
    ascend_parquet(tmp_path / "test" / "0000.parquet", ASCEND_ROWS)
    ds = load_ascend("test", data_dir=str(tmp_path))
    assert len(ds) == 4 and "cs_label" in ds.column_names
    assert list(ds["language"]) == ["zh", "en", "zh-en", "zh-en"]
    assert list(ds["cs_label"]) == ["zh", "en", "mixed", "mixed"]
    assert ds[0]["id"] == "ascend/test/00001" and ds[0]["speaker"] == "5"
    mixed = load_ascend("test", data_dir=str(tmp_path), where={"cs_label": "mixed"}, limit=1)  # filter, then limit
    assert list(mixed["id"]) == ["ascend/test/00003"] and mixed[0]["text"] == "我们 去 shopping 吧"
    # the flat layout {data_dir}/*{split}*.parquet
    ascend_parquet(tmp_path / "flat" / "ascend-validation.parquet", ASCEND_ROWS[:1])
    assert len(load_ascend("validation", data_dir=str(tmp_path / "flat"))) == 1


def test_ascend_missing_data_and_hub_failure(tmp_path, monkeypatch):
    with pytest.raises(MissingDataError) as err:
        load_ascend("train", data_dir=str(tmp_path))
    assert str(tmp_path / "train" / "*.parquet") in str(err.value) and "CAiRE/ASCEND" in str(err.value)

    def offline(*a, **k):
        raise OSError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(MissingDataError, match=r"CAiRE/ASCEND.*OSError: offline.*data_dir"):
        load_ascend("train")


# ---------------------------------------------------------------------------------------------- LibriSpeech

def librispeech(root):
    for spk, ch, utts in (("1089", "134686", [(0, "HE HOPED THERE WOULD BE STEW", 0.5, 200.0),
                                             (1, "STUFF IT INTO YOU", 0.4, 230.0)]),
                          ("121", "121726", [(0, "ALSO A POPULAR CONTRIVANCE", 0.3, 410.0)])):
        d = root / spk / ch
        for u, _, seconds, freq in utts:
            write(d / f"{spk}-{ch}-{u:04d}.flac", seconds, freq=freq)
        (d / f"{spk}-{ch}.trans.txt").write_text(
            "".join(f"{spk}-{ch}-{u:04d} {text}\n" for u, text, _, _ in utts), encoding="utf-8")


def test_librispeech_dir_and_a_two_talker_mixture(tmp_path):
    """LibriMix-style mixing from a LibriSpeech-format directory."""
    librispeech(tmp_path)
    ds = load_librispeech_dir(str(tmp_path))
    check_shape(ds, 3, "en")
    assert list(ds["speaker"]) == ["1089", "1089", "121"]
    assert ds[0]["id"] == "librispeech/1089-134686-0000" and ds[0]["text"] == "HE HOPED THERE WOULD BE STEW"
    target, interferer = ds[0], ds[2]
    assert target["speaker"] != interferer["speaker"]
    t, x = target["audio"]["array"], interferer["audio"]["array"]
    out, facts = mix(t, [x], MixSpec(overlap=0.5, sir_db=0.0), np.random.default_rng(0))
    (offset,) = facts["offsets"]
    covered = round(0.5 * len(t))
    assert offset in (covered - len(x), len(t) - covered)  # before the target or inside it
    assert len(out) == max(len(t), offset + len(x)) - min(0, offset)
    assert facts["overlap"] == [pytest.approx(min(covered, len(x)) / len(t), abs=1e-3)]
    assert facts["target_start"] == -min(0, offset)


def test_librispeech_dir_missing_and_bad_transcripts(tmp_path):
    with pytest.raises(MissingDataError, match=r"nope not found.*openslr\.org/12"):
        load_librispeech_dir(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDataError, match=r"no \*\.trans\.txt"):
        load_librispeech_dir(str(tmp_path / "empty"))
    d = tmp_path / "bad" / "7" / "8"
    write(d / "7-8-0000.flac", 0.2)
    (d / "7-8.trans.txt").write_text("7-8-0000\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"7-8-0000\.flac \(listed in .*7-8\.trans\.txt line 1\): empty transcript"):
        load_librispeech_dir(str(tmp_path / "bad"))


def test_nan_samples_and_corrupt_files_are_refused_naming_the_file(tmp_path):
    fleurs_tsv(tmp_path, "ast_es", "test", [(1, "a.wav", "Bones.", 0.2)])
    audio = tone(0.2)
    audio[10] = np.nan
    sf.write(str(tmp_path / "ast_es" / "audio" / "test" / "a.wav"), audio, 16_000, subtype="FLOAT")
    with pytest.raises(CorpusError, match=r"audio/test/a\.wav .*NaN or infinite"):
        load_fleurs("ast_es", "test", data_dir=str(tmp_path))
    (tmp_path / "ast_es" / "audio" / "test" / "a.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    with pytest.raises(CorpusError, match=r"audio/test/a\.wav .*cannot decode audio"):
        load_fleurs("ast_es", "test", data_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------- scenarios

@pytest.mark.parametrize("name,metric,n_exp", [("fleurs_unseen", "cer", 3), ("cv_clmasr", "wer", 10),
                                               ("mls", "wer", 7), ("ascend", "mer", 1)])
def test_scenario_files_load_without_data(name, metric, n_exp, monkeypatch):
    for var in ("CV_ROOT", "FLEURS_DIR", "MLS_ROOT", "ASCEND_DIR", "LIBRISPEECH_DIR"):
        monkeypatch.delenv(var, raising=False)
    builder = load_scenario_builder(name)
    cfg = builder.config
    assert cfg.builder == "corpus" and cfg.metric == metric and len(cfg.experiences) == n_exp
    assert set(cfg.profiles) == {"micro", "quick", "full"} and cfg.data_source


def test_cv_scenario_without_cv_root_fails_clearly_at_build(monkeypatch):
    monkeypatch.delenv("CV_ROOT", raising=False)
    builder = load_scenario_builder("cv_clmasr")
    with pytest.raises(MissingDataError, match=r"args\.root is '\$\{CV_ROOT\}'.*CV_ROOT is not set"):
        builder.build(builder.profile("micro"), None, None, progress=False)


def test_arg_expansion(monkeypatch):
    from cl_asr.scenarios.corpus import expand_arg

    monkeypatch.setenv("DATA_X", "/data/x")
    monkeypatch.delenv("DATA_Y", raising=False)
    assert expand_arg("${DATA_X}/{split}", "w", "test-clean") == "/data/x/test-clean"
    assert expand_arg("${DATA_Y:-}", "w", "test") is None  # empty: the loader's hub copy
    assert expand_arg("${DATA_Y:-/fallback}", "w", "test") == "/fallback"
    assert expand_arg(3, "w", "test") == 3


SCENARIO = """\
name: fleurs_fixture
builder: corpus
description: FLEURS fixture
data_source: FLEURS fixture in tmp
metric: cer
base_languages:
  - {{name: en, language: en, loader: fleurs, args: {{config: en_us, data_dir: "${{FLEURS_FIXTURE}}"}}}}
experiences:
  - {{name: ast, language: ast, loader: fleurs, args: {{config: ast_es, data_dir: "${{FLEURS_FIXTURE}}"}},
     train_split: train, test_split: test, decode_language: {decode}}}
lid_candidates: [es, pt, it]
profiles:
  micro: {{backbone: tiny:random, n_train: 3, n_test: 2, epochs: 1, batch_size: 2, max_new_tokens: 4,
          encoder_window_seconds: 1.0, lid_utterances: 2}}
"""


@pytest.mark.parametrize("decode", ["es", "auto"])
def test_corpus_builder_builds_a_scenario_from_a_local_fleurs_copy(decode, tmp_path, monkeypatch, tiny):
    data = tmp_path / "fleurs"
    fleurs_tsv(data, "ast_es", "train", [(i, f"{i}00.wav", f"Frase {i}.", 0.3 + 0.1 * i) for i in range(4)]
               + [(9, "900.wav", "Mui llarga.", 1.5)])  # longer than the 1 s window: left out
    fleurs_tsv(data, "ast_es", "test", [(20 + i, f"2{i}0.wav", f"Prueba {i}.", 0.4) for i in range(3)])
    fleurs_tsv(data, "en_us", "test", [(30 + i, f"3{i}0.wav", f"Test {i}.", 0.4) for i in range(2)])
    path = tmp_path / "fleurs_fixture.yaml"
    path.write_text(textwrap.dedent(SCENARIO.format(decode=decode)), encoding="utf-8")
    monkeypatch.setenv("FLEURS_FIXTURE", str(data))
    builder = load_scenario_builder(str(path))
    scenario = builder.build(builder.profile("micro"), tiny, tiny.feature_extractor, progress=False)

    assert scenario.metric == "cer" and scenario.experience_names == ["ast"] and scenario.preservation_names == ["en"]
    train = scenario.benchmark.train_stream[0].dataset
    assert len(train) == 3 and len(scenario.benchmark.test_stream[0].dataset) == 2
    assert len(scenario.benchmark.preservation_stream[0].dataset) == 2
    row = train[0]
    assert set(row) == set(COLUMNS) and row["language"] == "ast" and row["audio"]["array"].dtype == np.float32
    s = scenario.settings
    assert set(s) >= {"decode_language", "lid_probabilities", "lid_candidates", "utterances", "data_source"}
    assert s["data_source"] == "FLEURS fixture in tmp"
    assert s["utterances"]["per_set"] == {"train/ast": 3, "test/ast": 2, "preservation/en": 2}
    assert s["utterances"]["max_seconds"] <= 1.0
    target = scenario.target_of(scenario.benchmark.test_stream[0])
    assert (target.name, target.language) == ("ast", "ast")
    assert scenario.target_of(scenario.benchmark.preservation_stream[0]).decode_language == "en"
    if decode == "es":
        assert s["decode_language"] == {"ast": "es", "en": "en"} and s["lid_probabilities"] == {}
    else:
        probs = s["lid_probabilities"]["ast"]
        assert set(probs) == {"es", "pt", "it"} and sum(probs.values()) == pytest.approx(1.0, abs=1e-3)
        assert s["decode_language"]["ast"] == max(probs, key=probs.get) == target.decode_language


def test_corpus_config_errors_name_the_key(tmp_path):
    bad = SCENARIO.format(decode="es").replace("config: ast_es,", "config: ast_es, lang: x,")
    path = tmp_path / "bad.yaml"
    path.write_text(bad, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"loader 'fleurs' takes no argument 'lang'"):
        load_scenario_builder(str(path))
    path.write_text(SCENARIO.format(decode="es").replace("train_split: train", "train_split: test"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"train_split and test_split are both 'test'"):
        load_scenario_builder(str(path))
    path.write_text(SCENARIO.format(decode="xx"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"decode_language 'xx' is neither 'auto' nor a Whisper language"):
        load_scenario_builder(str(path))
