"""Routing twins (README "Routing twins"): a set-per-experience strategy and its variant that differs only in
`eval_routing` are trained once and evaluated both ways, and that gives exactly the rows of training the variant
on its own; the row it rides with is unchanged; a failure mid-stream resumes the pair together."""
import json

import pytest

from cl_asr import runner
from cl_asr.cli import main

MICRO = ["run", "--scenario", "languages", "--profile", "micro", "--no-progress", "--no-report", "--set", "n_train=2"]
TWIN = "spt_decoder[eval_routing=lid]"


def _rows(out, name, what="results"):
    return [r for r in map(json.loads, (out / f"{what}.jsonl").read_text().splitlines()) if r["strategy"] == name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("twins")
    assert main([*MICRO, "--strategies", f"spt_decoder,{TWIN}", "--out", str(base / "pair")]) == 0
    assert main([*MICRO, "--strategies", "spt_decoder", "--out", str(base / "plain")]) == 0
    assert main([*MICRO, "--strategies", TWIN, "--out", str(base / "alone")]) == 0
    return base


def test_a_routing_twin_is_evaluated_from_the_same_training_and_equals_training_it_alone(runs):
    pair, plain, alone = runs / "pair", runs / "plain", runs / "alone"
    for what in ("results", "predictions"):
        assert _rows(pair, "spt_decoder", what) == _rows(plain, "spt_decoder", what)  # the row it rides with
        assert _rows(pair, TWIN, what) == _rows(alone, TWIN, what)  # the twin: as if trained on its own
    twin_rows = _rows(pair, TWIN)
    assert twin_rows and {r["routing"] for r in twin_rows} == {"lid"}
    records = {r["strategy"]: r for r in json.loads((pair / "run.json").read_text())["strategy_runs"]}
    assert records[TWIN]["info"]["evaluated_from"] == "spt_decoder"
    assert records[TWIN]["train_seconds"] == records["spt_decoder"]["train_seconds"]  # one training, shared
    assert "evaluated_from" not in records["spt_decoder"].get("info", {})


def test_a_failure_mid_stream_resumes_the_row_and_its_twin_together(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "crash"
    real = runner.evaluate_as_twin
    state = {"raised": False}

    def flaky(run, strategy, twin, seed, step):
        if step == 1 and not state["raised"]:
            state["raised"] = True
            raise RuntimeError("injected failure while evaluating the twin")
        return real(run, strategy, twin, seed, step)

    monkeypatch.setattr(runner, "evaluate_as_twin", flaky)
    args = [*MICRO, "--strategies", f"spt_decoder,{TWIN}", "--out", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "2 of 2 strategy run(s) failed" in err and "injected failure" in err
    assert main(args) == 0  # resumed from the last finished pass, the twin with it
    assert "resumed from its checkpoint after eo" in "".join(capsys.readouterr())
    for what in ("results", "predictions"):
        for name in ("spt_decoder", TWIN):
            assert _rows(out, name, what) == _rows(runs / "pair", name, what)
