"""Common Voice read with CL-MASR's own split files (load_common_voice's clmasr_split_dir; cv_clmasr's
$CLMASR_SPLITS). The fixture: a Common Voice-layout release (tests/helpers.write_common_voice_split: locale eo,
0.3 s sine-wave WAV clips, one tone per clip) and CL-MASR-style manifests in the format that
speechbrain/benchmarks' benchmarks/CL_MASR/common_voice_prepare.py writes: {split}.csv, header
ID,mp3,wrd,locale,duration, mp3 = $data_root/<locale>/clips/<clip>, wrd = the normalised transcript."""
import csv

import numpy as np
import pytest
import yaml

from cl_asr.data.corpora import CorpusError, MissingDataError, load_common_voice
from cl_asr.scenarios import load_scenario_builder
from cl_asr.scenarios.corpus import expand_arg
from helpers import REPO, write_common_voice_split

HEADER = ["ID", "mp3", "wrd", "locale", "duration"]

# Common Voice's own splits of the fixture release: (clip, client id, sentence, tone in Hz)
CV_SPLITS = {
    "train": [("common_voice_eo_1.wav", "c1", "Saluton, amiko!", 300.0),
              ("common_voice_eo_2.wav", "c2", "Bonan tagon.", 400.0),
              ("common_voice_eo_3.wav", "c3", "Kiel vi fartas?", 500.0)],
    "dev": [("common_voice_eo_4.wav", "c4", "Dankon.", 600.0)],
    "test": [("common_voice_eo_5.wav", "c5", "Ĝis revido.", 700.0),
             ("common_voice_eo_6.wav", "c6", "Ne dankinde.", 800.0)],
}
# CL-MASR's re-split of the same release: (clip, wrd); other clips and rows than Common Voice's TSVs list
CLMASR_SPLITS = {
    "train": [("common_voice_eo_3.wav", "Kiel vi fartas?"), ("common_voice_eo_1.wav", "Saluton amiko!")],
    "dev": [("common_voice_eo_2.wav", "Bonan tagon.")],
    "test": [("common_voice_eo_6.wav", "Ne dankinde."), ("common_voice_eo_4.wav", "Dankon.")],
}
TONE = {clip: freq for rows in CV_SPLITS.values() for clip, _, _, freq in rows}


def cv_release(root):
    for split, rows in CV_SPLITS.items():
        write_common_voice_split(root, split, rows)
    return root


def manifest_rows(rows, locale="eo"):
    return [[clip.rsplit(".", 1)[0], f"$data_root/{locale}/clips/{clip}", wrd, locale, "0.3"] for clip, wrd in rows]


def write_manifest(path, rows, header=HEADER):
    """A CL-MASR manifest as its script writes it (csv.writer, comma-separated, header first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def clmasr_splits(folder, locale="eo"):
    """Per-locale layout: FOLDER/<locale>/{train,dev,test}.csv."""
    for split, rows in CLMASR_SPLITS.items():
        write_manifest(folder / locale / f"{split}.csv", manifest_rows(rows, locale))
    return folder


def tone_of(row):
    audio = np.asarray(row["audio"]["array"])
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(len(audio), 1 / row["audio"]["sampling_rate"])[int(np.argmax(spectrum))])


def one_line_error(exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------- reading

@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_the_split_files_rows_are_read_with_their_clips_from_the_release(tmp_path, split):
    root, splits = cv_release(tmp_path / "cv"), clmasr_splits(tmp_path / "clmasr")
    ds = load_common_voice(str(root), "eo", split, clmasr_split_dir=str(splits))
    want = sorted(CLMASR_SPLITS[split])
    assert list(ds["id"]) == [f"cv/eo/{split}/{clip.rsplit('.', 1)[0]}" for clip, _ in want]
    assert list(ds["text"]) == [wrd for _, wrd in want]  # CL-MASR's wrd, not the TSV's sentence
    assert set(ds["language"]) == {"eo"} and set(ds["speaker"]) == {"unknown"}
    for row, (clip, _) in zip(ds, want):
        assert row["audio"]["sampling_rate"] == 16_000 and row["audio"]["array"].dtype == np.float32
        assert len(row["audio"]["array"]) == int(0.3 * 16_000)
        assert tone_of(row) == pytest.approx(TONE[clip], abs=5)  # the row's own clip
    assert len(load_common_voice(str(root), "eo", split, limit=1, clmasr_split_dir=str(splits))) == 1


def test_one_file_per_split_for_several_locales_keeps_this_locales_rows(tmp_path):
    root = cv_release(tmp_path / "cv")
    rows = manifest_rows(CLMASR_SPLITS["train"]) + manifest_rows([("common_voice_rw_9.mp3", "Muraho")], "rw")
    write_manifest(tmp_path / "clmasr" / "train.csv", rows)  # rw's clip is not in the release: never looked at
    ds = load_common_voice(str(root), "eo", "train", clmasr_split_dir=str(tmp_path / "clmasr"))
    assert list(ds["id"]) == ["cv/eo/train/common_voice_eo_1", "cv/eo/train/common_voice_eo_3"]
    with pytest.raises(CorpusError) as err:
        load_common_voice(str(root), "kab", "train", clmasr_split_dir=str(tmp_path / "clmasr"))
    assert "train.csv: no rows for locale kab (its locale column holds eo, rw)" in one_line_error(err)


def test_without_the_argument_common_voices_tsvs_are_read_as_before(tmp_path):
    root = cv_release(tmp_path / "cv")
    clmasr_splits(tmp_path / "clmasr")
    before = load_common_voice(str(root), "eo", "train")
    assert list(before["id"]) == [f"cv/eo/train/common_voice_eo_{i}" for i in (1, 2, 3)]
    assert list(before["text"]) == ["Saluton, amiko!", "Bonan tagon.", "Kiel vi fartas?"]
    assert list(before["speaker"]) == ["c1", "c2", "c3"]
    for empty in (None, "", "   "):  # "" is what an unset ${CLMASR_SPLITS:-} gives: not given
        ds = load_common_voice(str(root), "eo", "train", clmasr_split_dir=empty)
        assert ds.to_dict() == before.to_dict() and ds.repairs == before.repairs


def test_a_split_folder_is_expanded_like_the_root(tmp_path, monkeypatch):
    root = cv_release(tmp_path / "cv")
    clmasr_splits(tmp_path / "home" / "clmasr")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ds = load_common_voice(str(root), "eo", "dev", clmasr_split_dir="~/clmasr")
    assert list(ds["id"]) == ["cv/eo/dev/common_voice_eo_2"]


# ---------------------------------------------------------------------------------------------- bad input

def test_a_missing_split_file_names_what_was_expected(tmp_path):
    root = cv_release(tmp_path / "cv")
    splits = tmp_path / "clmasr"
    write_manifest(splits / "rw" / "train.csv", manifest_rows([("common_voice_rw_1.mp3", "Muraho")], "rw"))
    with pytest.raises(MissingDataError) as err:
        load_common_voice(str(root), "eo", "test", clmasr_split_dir=str(splits))
    msg = one_line_error(err)
    assert f"neither {splits / 'eo' / 'test.csv'} nor {splits / 'test.csv'} exists" in msg
    assert "has: rw/train.csv" in msg and "ID,mp3,wrd,locale,duration" in msg and "common_voice_prepare.py" in msg
    with pytest.raises(MissingDataError) as err:
        load_common_voice(str(root), "eo", "test", clmasr_split_dir=str(tmp_path / "nowhere"))
    assert f"the split folder {tmp_path / 'nowhere'} does not exist" in one_line_error(err)
    with pytest.raises(ValueError, match=r"CL-MASR's split files are train, dev, test, not 'validated'"):
        load_common_voice(str(root), "eo", "validated", clmasr_split_dir=str(splits))


def test_a_missing_column_lists_the_columns_there(tmp_path):
    root = cv_release(tmp_path / "cv")
    path = write_manifest(tmp_path / "clmasr" / "eo" / "train.csv", [["common_voice_eo_1", "x", "Saluton", "eo"]],
                          header=["ID", "path", "wrd", "locale"])
    with pytest.raises(CorpusError) as err:
        load_common_voice(str(root), "eo", "train", clmasr_split_dir=str(tmp_path / "clmasr"))
    assert f"{path}: header lacks column(s) ['mp3']; it has ['ID', 'path', 'wrd', 'locale']" in one_line_error(err)
    # one file of several locales needs the locale column to tell them apart
    write_manifest(tmp_path / "all" / "train.csv", [["common_voice_eo_1", "$data_root/eo/clips/common_voice_eo_1.wav",
                                                     "Saluton"]], header=["ID", "mp3", "wrd"])
    with pytest.raises(CorpusError, match=r"train\.csv: header lacks column\(s\) \['locale'\]; it has \['ID', 'mp3'"):
        load_common_voice(str(root), "eo", "train", clmasr_split_dir=str(tmp_path / "all"))
    (tmp_path / "empty" / "eo").mkdir(parents=True)
    (tmp_path / "empty" / "eo" / "dev.csv").write_text("\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"dev\.csv: empty file \(no header"):
        load_common_voice(str(root), "eo", "dev", clmasr_split_dir=str(tmp_path / "empty"))


def test_a_row_naming_a_clip_not_in_the_release_names_the_file_and_line(tmp_path):
    root = cv_release(tmp_path / "cv")
    rows = manifest_rows([("common_voice_eo_1.wav", "Saluton"), ("common_voice_eo_99.mp3", "Mankas")])
    path = write_manifest(tmp_path / "clmasr" / "eo" / "train.csv", rows)
    with pytest.raises(MissingDataError) as err:
        load_common_voice(str(root), "eo", "train", clmasr_split_dir=str(tmp_path / "clmasr"))
    msg = one_line_error(err)
    assert msg.startswith(f"{path} line 3: field mp3 is '$data_root/eo/clips/common_voice_eo_99.mp3'")
    assert str(root / "eo" / "clips" / "common_voice_eo_99.mp3") in msg and "Common Voice 13.0" in msg
    with pytest.raises(MissingDataError, match=r"eo/clips not found: the clips .*train\.csv names are read from"):
        load_common_voice(str(tmp_path / "other_cv"), "eo", "train", clmasr_split_dir=str(tmp_path / "clmasr"))


@pytest.mark.parametrize("row,error", [
    (["common_voice_eo_1", "$data_root/eo/clips/common_voice_eo_1.wav", "", "eo", "0.3"], r"field wrd .* is empty"),
    (["common_voice_eo_1", "", "Saluton", "eo", "0.3"], r"field mp3 is empty"),
    (["common_voice_eo_1", "$data_root/eo/clips/common_voice_eo_1.wav", "Saluton", "rw", "0.3"],
     r"field locale is 'rw', not 'eo'"),
    (["common_voice_eo_1", "$data_root/rw/clips/common_voice_eo_1.wav", "Saluton", "eo", "0.3"],
     r"a clip of locale 'rw', not 'eo'"),
    (["common_voice_eo_1", "$data_root/eo/clips/common_voice_eo_1.wav", "Saluton", "amiko", "eo", "0.3"],
     r"6 fields, the header has 5"),
])
def test_a_bad_row_names_the_file_line_and_field(tmp_path, row, error):
    root = cv_release(tmp_path / "cv")
    good = manifest_rows([("common_voice_eo_2.wav", "Bonan tagon")])
    path = write_manifest(tmp_path / "clmasr" / "eo" / "train.csv", good + [row])
    with pytest.raises((CorpusError, MissingDataError)) as err:
        load_common_voice(str(root), "eo", "train", clmasr_split_dir=str(tmp_path / "clmasr"))
    msg = one_line_error(err)
    assert msg.startswith(f"{path} line 3: ") and err.match(error)


# ---------------------------------------------------------------------------------------------- scenario

def test_cv_clmasr_passes_the_split_folder_to_every_locale():
    builder = load_scenario_builder("cv_clmasr")
    specs = builder.config.base_languages + builder.config.experiences
    assert len(specs) == 20
    for spec in specs:
        assert spec.args == {"root": "${CV_ROOT}", "locale": spec.args["locale"],
                             "clmasr_split_dir": "${CLMASR_SPLITS:-}"}, spec.name
    raw = yaml.safe_load((REPO / "cl_asr" / "resources" / "scenarios" / "cv_clmasr.yaml").read_text(encoding="utf-8"))
    sets = raw["base_languages"] + raw["experiences"]
    assert [s["args"].get("clmasr_split_dir") for s in sets] == ["${CLMASR_SPLITS:-}"] * 20


def test_an_unset_or_empty_clmasr_splits_means_common_voices_tsvs(monkeypatch):
    monkeypatch.delenv("CLMASR_SPLITS", raising=False)
    assert expand_arg("${CLMASR_SPLITS:-}", "w", "train") is None
    monkeypatch.setenv("CLMASR_SPLITS", "")
    assert expand_arg("${CLMASR_SPLITS:-}", "w", "train") is None
    monkeypatch.setenv("CLMASR_SPLITS", "/data/clmasr")
    assert expand_arg("${CLMASR_SPLITS:-}", "w", "train") == "/data/clmasr"


def test_the_scenario_reads_clmasrs_splits_when_the_variable_is_set(tmp_path, monkeypatch):
    root, splits = cv_release(tmp_path / "cv"), clmasr_splits(tmp_path / "clmasr")
    builder = load_scenario_builder("cv_clmasr")
    eo = next(s for s in builder.config.experiences if s.name == "eo")
    monkeypatch.setenv("CV_ROOT", str(root))
    monkeypatch.setenv("CLMASR_SPLITS", str(splits))
    ds = builder.load_set(eo, eo.test_split, None, 10.0)
    assert list(ds["id"]) == ["cv/eo/test/common_voice_eo_4", "cv/eo/test/common_voice_eo_6"]
    monkeypatch.delenv("CLMASR_SPLITS")
    ds = builder.load_set(eo, eo.test_split, None, 10.0)
    assert list(ds["id"]) == ["cv/eo/test/common_voice_eo_5", "cv/eo/test/common_voice_eo_6"]
