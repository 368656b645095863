"""festvox-ru, real Russian read speech from Debian's package, as a preservation set any scenario can add
(`real_preservation: festvox_ru` -> set `ru_real`): the loader on a fixture with the package's layout (its own
split by utterance number, stress marks removed, one-line errors naming the file), the set in micro scenarios
(test and dev builds, n_real, leak check, run.json settings), Russian ё -> е in scoring, and the installed
package itself (skipped where it is absent, required under CL_ASR_REQUIRE_FESTVOX, as .ci/run sets it)."""
import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import soundfile as sf
from helpers import COMMON_VOICE_SCENARIO, write_common_voice_split

from cl_asr.config import ConfigError
from cl_asr.core import Target
from cl_asr.data.corpora import CorpusError, MissingDataError, festvox_ru, load_festvox_ru
from cl_asr.data.corpus import dataset_features
from cl_asr.metrics import text as text_metrics
from cl_asr.metrics.text import normalisation_notes, normalize, score
from cl_asr.resources import SCENARIO_DIR
from cl_asr.scenarios import available_scenarios, load_scenario_builder
from cl_asr.scenarios.base import ProfileConfig, ScenarioBuilder
from cl_asr.scenarios.leaks import SplitLeakError

RATE = 16_000
WORDS = ["один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять", "десять", "одиннадцать",
         "двенадцать", "тринадцать", "четырнадцать", "пятнадцать", "шестнадцать", "семнадцать", "восемнадцать",
         "девятнадцать", "двадцать"]


def tone(seconds, freq):
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_voice(root: Path, numbers=range(1, 21), text=None, skip_wav=()) -> Path:
    """A voice folder in the package's layout: etc/txt.done.data (stress marks, ё) and wav/ru_NNNN.wav tones."""
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    lines = []
    for n in numbers:
        uid = f"ru_{n:04d}"
        words = text(n) if text else f"Сл+ово {WORDS[n - 1]}, ещё р+аз."
        lines.append(f'( {uid} "{words}" )')
        if n not in skip_wav:
            sf.write(str(root / "wav" / f"{uid}.wav"), tone(0.3 + 0.01 * n, 200.0 + 15 * n), RATE, subtype="PCM_16")
    (root / "etc" / "txt.done.data").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def voice(tmp_path, monkeypatch):
    root = write_voice(tmp_path / "msu_ru_nsh_clunits")
    monkeypatch.setenv("FESTVOX_RU_DIR", str(root))
    return root


# ---------------------------------------------------------------------------------------------- the loader

def test_the_split_is_fixed_by_the_utterance_number():
    assert [festvox_ru.festvox_split(n) for n in (4, 20, 2, 10, 1, 9, 843)] == \
        ["test", "test", "dev", "dev", "train", "train", "train"]


def test_the_loader_reads_the_layout_removes_stress_marks_and_splits_disjointly(voice):
    splits = {s: load_festvox_ru(s, root=str(voice)) for s in ("train", "dev", "test")}
    assert list(splits["test"]["id"]) == [f"festvox_ru/test/ru_{n:04d}" for n in (4, 8, 12, 16, 20)]
    assert list(splits["dev"]["id"]) == ["festvox_ru/dev/ru_0002", "festvox_ru/dev/ru_0010", "festvox_ru/dev/ru_0018"]
    assert len(splits["train"]) == 12 and splits["test"].split_sizes == {"train": 12, "dev": 3, "test": 5}
    row = splits["test"][0]
    assert row["text"] == "Слово четыре, ещё раз." and "+" not in "".join(t for d in splits.values() for t in d["text"])
    assert (row["language"], row["speaker"], row["audio"]["sampling_rate"]) == ("ru", "festvox_ru/msu_ru_nsh", RATE)
    assert abs(row["duration"] - 0.34) < 1e-4  # 0.34 s of samples at 16 kHz and row["audio"]["array"].dtype == np.float32
    texts = {s: set(d["text"]) for s, d in splits.items()}
    assert not (texts["train"] & texts["dev"] or texts["train"] & texts["test"] or texts["dev"] & texts["test"])
    assert sum(map(len, texts.values())) == 20
    again = load_festvox_ru("test", limit=1)  # $FESTVOX_RU_DIR; the same first utterance by id
    assert list(again["id"]) == ["festvox_ru/test/ru_0004"] and again.root == str(voice)
    assert load_festvox_ru("test", root=str(voice), max_seconds=0.45).repairs["left_out_longer_than_max_seconds"] == 2
    with pytest.raises(ValueError, match="unknown split 'validation'; its splits are train, dev, test"):
        load_festvox_ru("validation", root=str(voice))


def test_without_the_package_one_line_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.delenv("FESTVOX_RU_DIR", raising=False)
    monkeypatch.setattr(festvox_ru, "DEBIAN_ROOT", tmp_path / "not_installed")
    with pytest.raises(MissingDataError) as err:
        load_festvox_ru("test")
    msg = str(err.value)
    assert "\n" not in msg and "package festvox-ru is not installed" in msg and "`apt-get install festvox-ru`" in msg
    assert isinstance(err.value, FileNotFoundError)  # the command line prints it as one `error:` line
    monkeypatch.setenv("FESTVOX_RU_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(MissingDataError, match=r"elsewhere/etc/txt.done.data not found \(\$FESTVOX_RU_DIR .*"
                                               r"`apt-get install festvox-ru` installs it"):
        load_festvox_ru("test")


def test_bad_input_is_one_line_naming_the_file(tmp_path):
    root = write_voice(tmp_path / "missing", skip_wav={12})
    with pytest.raises(MissingDataError, match=r"missing/wav/ru_0012.wav: audio file listed by .*txt.done.data "
                                               r"line 12\) is missing") as err:
        load_festvox_ru("test", root=str(root))
    assert "\n" not in str(err.value)
    root = write_voice(tmp_path / "empty", text=lambda n: "+" if n == 20 else f"Слово {WORDS[n - 1]}.")
    with pytest.raises(CorpusError, match=r"empty/wav/ru_0020.wav \(listed in .*empty/etc/txt.done.data line 20\): "
                                          r"empty transcript for utterance festvox_ru/test/ru_0020"):
        load_festvox_ru("test", root=str(root))
    bad = write_voice(tmp_path / "bad")
    (bad / "etc" / "txt.done.data").write_text('( ru_0001 "Раз." )\nru_0002 Два\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad/etc/txt.done.data line 2: expected `\( ru_NNNN \"transcript\" \)`"):
        load_festvox_ru("train", root=str(bad))
    (bad / "etc" / "txt.done.data").write_text('( ru_0001 "Раз." )\n( arctic_a0001 "Два." )\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"line 2: utterance id 'arctic_a0001' is not ru_<number>"):
        load_festvox_ru("train", root=str(bad))
    (bad / "etc" / "txt.done.data").write_text('( ru_0001 "Ещё раз." )\n( ru_0012 "Е+ще раз!" )\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"txt.done.data lines 1 and 2: the same sentence is in the train and test"):
        load_festvox_ru("train", root=str(bad))
    (bad / "wav" / "ru_0012.wav").write_text("not audio", encoding="utf-8")
    (bad / "etc" / "txt.done.data").write_text('( ru_0012 "Раз." )\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad/wav/ru_0012.wav \(listed in .*line 1\): not an audio file"):
        load_festvox_ru("test", root=str(bad))


# ---------------------------------------------------------------------------------------------- the key

def test_default_scenarios_have_no_real_preservation_set():
    for name in available_scenarios():
        assert load_scenario_builder(name).real_preservation == (), name


def scenario_file(tmp_path, value: str, base: str = "languages") -> str:
    path = tmp_path / f"{base}_real.yaml"
    path.write_text((SCENARIO_DIR / f"{base}.yaml").read_text(encoding="utf-8") + f"real_preservation: {value}\n",
                    encoding="utf-8")
    return str(path)


def test_the_key_is_checked_when_the_file_loads(tmp_path):
    assert load_scenario_builder(scenario_file(tmp_path, "festvox_ru")).real_preservation == ("festvox_ru",)
    assert load_scenario_builder(scenario_file(tmp_path, "[festvox_ru]")).real_preservation == ("festvox_ru",)
    with pytest.raises(ConfigError, match=r"real_preservation: unknown source 'librivox'; known: festvox_ru"):
        load_scenario_builder(scenario_file(tmp_path, "librivox"))
    with pytest.raises(ConfigError, match=r"real_preservation expects a source name or a list of them"):
        load_scenario_builder(scenario_file(tmp_path, "{festvox_ru: 1}"))
    with pytest.raises(ConfigError, match=r"lists 'festvox_ru' more than once"):
        load_scenario_builder(scenario_file(tmp_path, "[festvox_ru, festvox_ru]"))
    with pytest.raises(ValueError, match="n_real must be at least 1"):
        ProfileConfig(n_real=0)


@pytest.fixture(scope="module")
def windowed():
    from cl_asr.backbones import load_backbone
    from cl_asr.backbones.window import set_encoder_window, window_feature_extractor

    backbone = load_backbone("tiny:random", seed=0)
    set_encoder_window(backbone.model, 10.0)
    return backbone, window_feature_extractor(backbone.feature_extractor, 10.0)


def ids(stream, index):
    from cl_asr.scenarios.base import Scenario

    return [i for d in Scenario.set_datasets(stream[index]) for i in d["id"]]


def test_a_micro_scenario_gets_the_real_set_in_test_and_dev_builds(tmp_path, voice, windowed):
    builder = load_scenario_builder(scenario_file(tmp_path, "festvox_ru"))
    profile = builder.profile("micro")  # n_test 3, 10 s window; the fixture's test split has 5 utterances
    sc = builder.build(profile, *windowed, progress=False)
    assert sc.preservation_names == ["en", "de", "es", "ru_real"]
    assert sc.targets[("preservation", 3)] == Target("preservation", 3, "ru_real", "ru", "ru")
    assert sc.decode_languages["ru"] == "ru"
    pres = sc.benchmark.preservation_stream
    assert ids(pres, 3) == ["festvox_ru/test/ru_0004", "festvox_ru/test/ru_0008", "festvox_ru/test/ru_0012"]
    real = sc.settings["real_preservation"]["ru_real"]
    assert real["split"] == "test" and real["split_sizes"] == {"train": 12, "dev": 3, "test": 5}
    assert real["utterances"] == 3 and real["source"] == "festvox_ru" and real["root"] == str(voice)
    assert any(line.startswith("ru: ") and "ё folded to е" in line for line in sc.settings["normalisation"])
    assert sc.settings["utterances"]["total"] == sum(len(e.dataset) for s in sc.benchmark.streams.values() for e in s)
    sc.check_disjoint()

    dev = builder.build(dataclasses.replace(profile, n_dev=1), *windowed, progress=False, evaluate="dev")
    assert dev.preservation_names == sc.preservation_names
    assert ids(dev.benchmark.preservation_stream, 3) == ["festvox_ru/dev/ru_0002"]  # n_dev: 1 (n_real: test only)
    assert dev.settings["real_preservation"]["ru_real"]["split"] == "dev"
    dev.check_disjoint()


def test_a_corpus_scenario_counts_the_set_and_the_leak_check_covers_it(tmp_path, voice):
    write_common_voice_split(tmp_path, "train", [("a.wav", "c1", "Saluton.", 200.0), ("b.wav", "c2", "Bonan.", 250.0)])
    write_common_voice_split(tmp_path, "test", [("c.wav", "c3", "Ĝis.", 300.0)])
    path = tmp_path / "cv.yaml"
    path.write_text(COMMON_VOICE_SCENARIO.format(root=tmp_path) + "real_preservation: festvox_ru\n", encoding="utf-8")
    builder = load_scenario_builder(str(path))
    sc = builder.build(builder.profile("micro"), None, None, progress=False)
    assert sc.settings["utterances"]["per_set"]["preservation/ru_real"] == 3  # micro n_test 3, of the fixture's 5 test utterances
    assert sc.disjoint["sentences"][("preservation", 0)] == "festvox_ru"
    sc.check_disjoint()

    # a scenario that trains on the real set's recordings is refused before any work
    train, test = load_festvox_ru("test", root=str(voice)), load_festvox_ru("dev", root=str(voice))
    other = ScenarioBuilder(SimpleNamespace(name="leak", metric="wer"), "leak", real_preservation=("festvox_ru",))
    leak = other.assemble(ProfileConfig(n_train=2, n_test=2, encoder_window_seconds=10), [train], [test],
                          [], {("train", 0): Target("train", 0, "x", "ru", "ru"),
                               ("test", 0): Target("test", 0, "x", "ru", "ru")}, {})
    with pytest.raises(SplitLeakError, match=r"train/x and preservation/ru_real share 2 utterance\(s\) by audio"):
        leak.check_disjoint()


def test_a_clash_of_names_or_decoding_tokens_is_refused(voice):
    pres = load_festvox_ru("dev", root=str(voice))
    builder = ScenarioBuilder(SimpleNamespace(name="clash", metric="wer"), "clash", real_preservation=("festvox_ru",))
    profile = ProfileConfig(n_train=1, n_test=1, encoder_window_seconds=10)
    with pytest.raises(ValueError, match=r"decodes language 'ru' as 'ru', but set 'x' decodes it as 'uk'"):
        builder.assemble(profile, [pres], [pres], [], {("train", 0): Target("train", 0, "x", "ru", "uk"),
                                                       ("test", 0): Target("test", 0, "x", "ru", "uk")}, {})
    with pytest.raises(ValueError, match=r"adds the set 'ru_real', but the scenario already has a set of that name"):
        builder.assemble(profile, [pres], [pres], [], {("train", 0): Target("train", 0, "ru_real", "ru", "ru"),
                                                       ("test", 0): Target("test", 0, "ru_real", "ru", "ru")}, {})


def test_in_a_target_speaker_scenario_the_set_gets_an_enrolment_of_its_speaker(voice):
    rows = {"id": ["m/0"], "text": ["two talkers"], "language": ["en"], "speaker": ["v"], "duration": [0.3],
            "audio": [{"array": tone(0.3, 700.0), "sampling_rate": RATE}], "enrolment": [[0.5] * 256]}
    feats = dataset_features({"enrolment": datasets.List(datasets.Value("float32"))})
    mix = datasets.Dataset.from_dict(rows, features=feats).with_format("numpy", columns=["audio", "enrolment"],
                                                                       output_all_columns=True)
    builder = ScenarioBuilder(SimpleNamespace(name="ts", metric="wer"), "ts", real_preservation=("festvox_ru",))
    sc = builder.assemble(ProfileConfig(n_train=1, n_test=1, encoder_window_seconds=10), [mix], [mix], [mix],
                          {("train", 0): Target("train", 0, "2mix", "en", "en"),
                           ("test", 0): Target("test", 0, "2mix", "en", "en"),
                           ("preservation", 0): Target("preservation", 0, "single", "en", "en")}, {})
    (real,) = sc.set_datasets(sc.benchmark.preservation_stream[1])
    vector = real[0]["enrolment"]
    assert vector.shape == (256,) and vector.dtype == np.float32 and abs(float(np.linalg.norm(vector)) - 1) < 1e-4
    assert sc.settings["real_preservation"]["ru_real"]["enrolment_from"] == "festvox_ru/train/ru_0001"


# ---------------------------------------------------------------------------------------------- scoring

def test_russian_folds_yo_to_ye_and_no_other_language_changes(monkeypatch):
    assert normalize("Ещё ВСЁ, Ёлка!", "ru") == "еще все елка"
    assert score(["Она ещё читала."], ["она еще читала"], "ru", ("wer", "cer"))["wer"].edits == 0
    assert score(["ёлка"], ["елка"], "uk", ("cer",))["cer"].edits == 1  # only Russian is folded
    texts = [("en", "It's 5 o'clock, Mr. Smith! ёж"), ("de", "Grüße, Straße ёж"), ("eo", "Ĉu ŝi? ёж"),
             ("ga", "Tá sé fuar. ёж"), ("es", "¿Qué tal? ёж"), ("ia", "Io es ёж"), ("zh", "這是中文 ёж"),
             ("es-en", "sí ok ёж"), ("zh-en", "中文 ok ёж")]
    now = [normalize(t, lang) for lang, t in texts]
    notes = normalisation_notes(["eo", "ru", "en", "es"])
    assert notes[0].startswith("eo, es: Whisper's basic normaliser") and notes[1].startswith("ru: ")
    assert notes[1].endswith("then ё folded to е") and notes[2].startswith("en: Whisper's English normaliser")
    monkeypatch.setattr(text_metrics, "FOLDS", {})  # as before folds existed
    assert now == [normalize(t, lang) for lang, t in texts]  # a fold changes its own language only
    assert now[1].endswith("ёж") and normalize("Ещё", "ru") == "ещё"


# ---------------------------------------------------------------------------------------------- the real package

INSTALLED = (festvox_ru.DEBIAN_ROOT / "etc" / "txt.done.data").is_file()


@pytest.mark.skipif(not INSTALLED and not os.environ.get("CL_ASR_REQUIRE_FESTVOX"),
                    reason="Debian's festvox-ru is not installed (apt-get install festvox-ru; .ci/run installs it)")
def test_the_installed_package(monkeypatch):
    assert INSTALLED, "CL_ASR_REQUIRE_FESTVOX is set but festvox-ru is not installed (apt-get install festvox-ru)"
    monkeypatch.delenv("FESTVOX_RU_DIR", raising=False)
    entries = festvox_ru.festvox_entries()
    assert {s: len(e) for s, e in entries.items()} == {"train": 387, "dev": 75, "test": 158}
    texts = [e.text for es in entries.values() for e in es]
    assert len(set(texts)) == 620 and not any("+" in t or any(c.isdigit() for c in t) for t in texts)
    assert sum("ё" in t for t in texts) > 100  # why Russian scoring folds ё -> е
    ds = load_festvox_ru("test", limit=2, max_seconds=10)
    assert list(ds["id"]) == ["festvox_ru/test/ru_0012", "festvox_ru/test/ru_0016"]  # ru_0004, ru_0008: > 10 s
    assert ds.split_sizes == {"train": 387, "dev": 75, "test": 158} and ds.repairs["resampled_to_16k"] == 0


def test_a_profile_can_name_its_own_real_sets(tmp_path, voice, windowed):
    builder = load_scenario_builder("languages")  # the file has no real_preservation key
    assert builder.profile("standard").real_preservation == ["festvox_ru"]  # the standard profile has one
    assert builder.profile("quick").real_preservation is None
    profile = dataclasses.replace(builder.profile("micro"), real_preservation=["festvox_ru"])
    sc = builder.build(profile, *windowed, progress=False)
    assert sc.preservation_names == ["en", "de", "es", "ru_real"]
    assert builder.build(builder.profile("micro"), *windowed, progress=False).preservation_names == ["en", "de", "es"]
    with pytest.raises(Exception, match="real_preservation: unknown source 'nope'"):
        ProfileConfig(real_preservation=["nope"])
