"""The `speakers` builder with a LibriSpeech source (scenarios/librimix.yaml): LibriMix-style mixtures made on
the fly from LibriSpeech-format directories, on a tiny fixture written here (espeak-ng voices as "speakers",
FLAC + .trans.txt in LibriSpeech's layout). No network."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from cl_asr.config import ConfigError, from_dict, load_yaml
from cl_asr.data.corpora import CorpusError, MissingDataError
from cl_asr.data.corpora import common as corpora_common
from cl_asr.data.speaker import EMBEDDING_DIM, speaker_embedding
from cl_asr.data.tts import Voice, synthesize
from cl_asr.scenarios import load_scenario_builder, scenario_path
from cl_asr.scenarios.speakers import SpeakersConfig

VARIANTS = ["m1", "f1", "m2", "f2", "m3", "f3", "m4", "f4", "m5", "f5"]
SENTENCES = ["the cat sat on the mat", "a boat drifted down the river", "she opened the old wooden door",
             "we walked home after the rain", "the bell rang twice at noon", "he found a coin in the sand"]
VARS = ("LIBRISPEECH_TRAIN_DIR", "LIBRISPEECH_TEST_DIR")


def librispeech_root(root, first_speaker, utterances=3):
    """10 speakers x `utterances`, {root}/{SPK}/{CH}/{SPK}-{CH}-{UTT}.flac + {SPK}-{CH}.trans.txt;
    returns {utterance id: transcript}."""
    texts = {}
    for k, variant in enumerate(VARIANTS):
        spk, ch = str(first_speaker + k), str(500 + k)
        d = root / spk / ch
        d.mkdir(parents=True)
        lines = []
        for u in range(utterances):
            utt = f"{spk}-{ch}-{u:04d}"
            text = SENTENCES[(k + u) % len(SENTENCES)].upper()
            sf.write(str(d / f"{utt}.flac"), synthesize(text.lower(), Voice("en", variant, 150 + 5 * k, 40 + 4 * k)),
                     16_000)
            lines.append(f"{utt} {text}\n")
            texts[f"librispeech/{utt}"] = text
        (d / f"{spk}-{ch}.trans.txt").write_text("".join(lines), encoding="utf-8")
    return texts


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny):
    tmp = tmp_path_factory.mktemp("librimix")
    texts = {**librispeech_root(tmp / "train-clean-100", 100), **librispeech_root(tmp / "test-clean", 200)}
    decoded = []
    read_audio = corpora_common.read_audio

    def counting(source, where):
        decoded.append(str(source))
        return read_audio(source, where)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # resemblyzer's LSTM is ~30x slower with 2 threads on a busy 2-core machine
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LIBRISPEECH_TRAIN_DIR", str(tmp / "train-clean-100"))
            mp.setenv("LIBRISPEECH_TEST_DIR", str(tmp / "test-clean"))
            mp.setattr(corpora_common, "read_audio", counting)  # where build_dataset looks it up
            builder = load_scenario_builder("librimix")
            scenario = builder.build(builder.profile("micro"), tiny, tiny.feature_extractor, progress=False)
            enrolment_check = speaker_embedding(first_enrolment(scenario, tmp))
    finally:
        torch.set_num_threads(threads)
    return scenario, texts, decoded, enrolment_check


def first_enrolment(scenario, tmp):
    row = scenario.benchmark.train_stream[0].dataset[0]
    utt = json.loads(row["mix"])["sources"]["enrolment"].split("/")[1]
    spk, ch, _ = utt.split("-")
    audio, _ = sf.read(str(tmp / "train-clean-100" / spk / ch / f"{utt}.flac"), dtype="float32")
    return audio


def rows(stream):
    return [stream_exp.dataset[i] for stream_exp in stream for i in range(len(stream_exp.dataset))]


def test_streams_rows_and_provenance(built):
    scenario, texts, decoded, enrolment_check = built
    b = scenario.benchmark
    assert scenario.experience_names == ["2mix", "2mix_noisy", "3mix"] and scenario.metric == "wer"
    assert [len(e.dataset) for e in b.train_stream] == [4, 4, 4]
    assert [len(e.dataset) for e in b.test_stream] == [3, 3, 3]
    assert [len(e.dataset) for e in b.preservation_stream] == [3]
    assert "enrolment" in scenario.columns
    talkers = {"2mix": 2, "2mix_noisy": 2, "3mix": 3}
    for stream, first in ((b.train_stream, "1"), (b.test_stream, "2"), (b.preservation_stream, "2")):
        for exp in stream:
            name = scenario.target_of(exp).name
            for i in range(len(exp.dataset)):
                row = exp.dataset[i]
                assert row["enrolment"].shape == (EMBEDDING_DIM,) and row["enrolment"].dtype == np.float32
                assert row["duration"] <= 10.0 and row["language"] == "en"
                src = json.loads(row["mix"])["sources"]
                spk = src["target"].split("/")[1].split("-")[0]
                assert spk == row["speaker"] and spk.startswith(first)  # train root 1xx, test root 2xx
                assert row["text"] == texts[src["target"]]
                assert src["enrolment"] != src["target"] and src["enrolment"].split("/")[1].startswith(f"{spk}-")
                others = [x.split("/")[1].split("-")[0] for x in src["interferers"]]
                assert spk not in others and len(set(others)) == len(others)
                assert len(others) == (talkers[name] - 1 if stream is not b.preservation_stream else 0)
    pres = rows(b.preservation_stream)
    assert all(json.loads(r["mix"])["offsets"] == [] for r in pres)  # single talker, clean
    # The enrolment column is the d-vector of the named enrolment utterance.
    np.testing.assert_allclose(b.train_stream[0].dataset[0]["enrolment"], enrolment_check, atol=1e-5)
    # Only what is used is decoded: at most the first 2 utterances (micro) of each speaker used, each once.
    assert len(decoded) == len(set(decoded)) < len(texts)
    assert all(p.endswith(("-0000.flac", "-0001.flac")) for p in decoded)
    used = set()  # every utterance mixed in (target, enrolment, interferers) was decoded, of used speakers only
    for r in rows(b.train_stream) + rows(b.test_stream) + pres:
        src = json.loads(r["mix"])["sources"]
        used |= {src["target"], src["enrolment"], *src["interferers"]}
    decoded_ids = {"librispeech/" + path.rsplit("/", 1)[1].removesuffix(".flac") for path in decoded}
    assert used <= decoded_ids
    assert {u.split("/")[1].split("-")[0] for u in decoded_ids} == {u.split("/")[1].split("-")[0] for u in used}
    s = scenario.settings
    assert s["source"]["kind"] == "librispeech" and s["source"]["max_target_seconds"] == pytest.approx(9.4)
    assert len(s["conditions"]["3mix"]["speakers"]["train"]) == 10


def test_missing_env_var_dir_and_too_few_speakers(tmp_path, monkeypatch):
    builder = load_scenario_builder("librimix")  # loads without the variables (data is read in build())
    micro = builder.profile("micro")
    for var in VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(MissingDataError, match=r"source\.train_root .*LIBRISPEECH_TRAIN_DIR is not set"):
        builder.build(micro, None, None, progress=False)
    monkeypatch.setenv("LIBRISPEECH_TRAIN_DIR", str(tmp_path / "nope"))
    monkeypatch.setenv("LIBRISPEECH_TEST_DIR", str(tmp_path / "nope"))
    with pytest.raises(MissingDataError, match=r"nope not found.*openslr\.org/12"):
        builder.build(micro, None, None, progress=False)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("LIBRISPEECH_TRAIN_DIR", str(tmp_path / "empty"))
    with pytest.raises(MissingDataError, match=r"no \*\.trans\.txt"):
        builder.build(micro, None, None, progress=False)
    for spk in ("1", "2"):  # transcripts suffice: speakers are counted before anything is decoded
        (tmp_path / "two" / spk / "9").mkdir(parents=True)
        (tmp_path / "two" / spk / "9" / f"{spk}-9.trans.txt").write_text(f"{spk}-9-0000 HI\n")
    monkeypatch.setenv("LIBRISPEECH_TRAIN_DIR", str(tmp_path / "two"))
    with pytest.raises(CorpusError, match=r"condition 2mix draws 10 speakers, but .*two has only 2"):
        builder.build(micro, None, None, progress=False)


def test_speakers_yaml_stays_synthetic_and_configs_are_validated():
    cfg = load_scenario_builder("speakers").config
    assert cfg.source.kind == "synthetic" and cfg.source.train_root is None
    assert len(cfg.experiences) == 3 and all(c.voices and c.speakers is None for c in cfg.experiences)
    synthetic = load_yaml(scenario_path("speakers"))
    real = load_yaml(scenario_path("librimix"))
    from_dict(SpeakersConfig, real, "librimix")

    def refused(data, pattern):
        with pytest.raises(ConfigError, match=pattern):
            from_dict(SpeakersConfig, data, "x")

    refused({**synthetic, "experiences": [{"name": "a", "talkers": 2}]}, r"synthetic source needs voices")
    refused({**synthetic, "experiences": [{**synthetic["experiences"][0], "speakers": 4}]}, r"not speakers")
    refused({**real, "experiences": [{"name": "a", "talkers": 3, "speakers": 2}]},
            r"3 talkers need at least as many speakers, got 2")
    refused({**real, "experiences": [{"name": "a", "talkers": 2}]}, r"librispeech source needs speakers")
    refused({**real, "experiences": [synthetic["experiences"][0]]}, r"librispeech source needs speakers")
    refused({**real, "source": {"kind": "librispeech", "train_root": "/x"}}, r"needs train_root and test_root")
    refused({**synthetic, "source": {"train_root": "/x"}}, r"only a librispeech source reads directories")
    refused({**real, "language": "de"}, r"LibriSpeech is English")
