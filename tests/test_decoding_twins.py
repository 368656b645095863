"""Decoding twins (README "Decoding twins"): a strategy and its variant that differs only in how it decodes
(`eval_routing` for a set-per-experience strategy; the fusion LM's `lm_weight` / `lm_order` for any that trains
per experience, and zero_shot) are trained once and evaluated both ways, and that gives exactly the rows of
training the variant on its own; the row it rides with is unchanged; a failure mid-stream resumes the pair
together."""
import json

import pytest

from cl_asr import runner
from cl_asr.cli import main
from helpers import fail_once

MICRO = ["run", "--scenario", "languages", "--profile", "micro", "--no-progress", "--no-report", "--set", "n_train=2"]
TWIN = "spt_decoder[eval_routing=lid]"


def _rows(out, name, what="results"):
    return [r for r in map(json.loads, (out / f"{what}.jsonl").read_text().splitlines()) if r["strategy"] == name]


PAIRS = {"routing": ("spt_decoder", TWIN), "fusion": ("fft", "fft[lm_weight=2.0]"),
         "fusion_untrained": ("zero_shot", "zero_shot[lm_order=2,lm_weight=2.0]"),
         "fusion_off": ("spt_decoder[lm_weight=2.0]", "spt_decoder")}  # the twin without the row's LM


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("twins")
    for kind, (row, twin) in PAIRS.items():
        assert main([*MICRO, "--strategies", f"{row},{twin}", "--out", str(base / kind / "pair")]) == 0
        assert main([*MICRO, "--strategies", row, "--out", str(base / kind / "plain")]) == 0
        assert main([*MICRO, "--strategies", twin, "--out", str(base / kind / "alone")]) == 0
    return base


@pytest.mark.parametrize("kind", PAIRS)
def test_a_decoding_twin_is_evaluated_from_the_same_training_and_equals_training_it_alone(runs, kind):
    row, twin = PAIRS[kind]
    pair, plain, alone = runs / kind / "pair", runs / kind / "plain", runs / kind / "alone"
    for what in ("results", "predictions"):
        assert _rows(pair, row, what) == _rows(plain, row, what)  # the row it rides with
        assert _rows(pair, twin, what) == _rows(alone, twin, what)  # the twin: as if trained on its own
    assert _rows(pair, row, "predictions") != _rows(pair, twin, "predictions")  # they do decode differently
    records = {r["strategy"]: r for r in json.loads((pair / "run.json").read_text())["strategy_runs"]}
    assert records[twin]["info"]["evaluated_from"] == row
    assert records[twin]["train_seconds"] == records[row]["train_seconds"]  # one training, shared
    assert "evaluated_from" not in records[row].get("info", {})
    if kind == "routing":
        assert {r["routing"] for r in _rows(pair, twin)} == {"lid"}


def test_which_rows_are_twins(tmp_path):
    from cl_asr.runner import RunRequest, check_request

    names = ["spt_decoder", "spt_decoder[eval_routing=lid]", "spt_decoder[lm_weight=0.3]", "spt_decoder[lr=0.1]",
             "fft", "fft[lm_order=2,lm_weight=0.3]", "fft[lr=0.001]", "joint", "zero_shot", "zero_shot[lm_weight=0.3]",
             "spt_decoder@ga>eo>ia", "spt_decoder[eval_routing=lid]@ga>eo>ia"]
    checked = check_request(RunRequest(scenario="languages", strategies=names, profile="micro", out_dir=tmp_path))
    assert checked.names == names
    assert runner.decoding_twins(names, checked.classes, checked.configs) == {
        "spt_decoder[eval_routing=lid]": "spt_decoder", "spt_decoder[lm_weight=0.3]": "spt_decoder",
        "fft[lm_order=2,lm_weight=0.3]": "fft", "zero_shot[lm_weight=0.3]": "zero_shot",
        "spt_decoder[eval_routing=lid]@ga>eo>ia": "spt_decoder@ga>eo>ia"}  # lr trains otherwise; so does an order


def test_a_failure_mid_stream_resumes_the_row_and_its_twin_together(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "crash"
    fail_once(monkeypatch, runner, "evaluate_as_twin", lambda run, strategy, twin, seed, step: step == 1,
              "injected failure while evaluating the twin")
    args = [*MICRO, "--strategies", f"spt_decoder,{TWIN}", "--out", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "2 of 2 strategy run(s) failed" in err and "injected failure" in err
    assert main(args) == 0  # resumed from the last finished pass, the twin with it
    assert "resumed from its checkpoint after eo" in "".join(capsys.readouterr())
    for what in ("results", "predictions"):
        for name in ("spt_decoder", TWIN):
            assert _rows(out, name, what) == _rows(runs / "routing" / "pair", name, what)
