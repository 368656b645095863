"""A strategy fails alone (local executor): one raising in setup() and one raising mid-training are recorded in
run.json, the log and the report's "Failures" section while the others complete; the command exits non-zero, and
running it again retries only what failed (the mid-training one from its last finished pass)."""
import json
import shutil
import subprocess
import sys

import pandas as pd
from helpers import REPO

from cl_asr.report import write_report

METHODS = REPO / "tests" / "data" / "failing_methods.py"


def _run(out, markers, strategies):
    cmd = [sys.executable, str(REPO / "run_suite.py"), "run", "--scenario", "languages", "--profile", "micro",
           "--no-progress", "--strategies", strategies, "--methods-from", str(METHODS), "--out", str(out)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**__import__("os").environ, "CL_ASR_TEST_MARKERS": str(markers)})


def _rows(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_failing_strategies_are_recorded_the_others_complete_and_a_rerun_retries_them(tmp_path):
    out, markers = tmp_path / "run", tmp_path / "markers"
    strategies = "flaky_once,zero_shot,flaky_training_once,fft"
    first = _run(out, markers, strategies)
    assert first.returncode == 1, first.stderr[-3000:]
    error = [line for line in first.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "2 of 4 strategy run(s) failed" in error[0], first.stderr[-3000:]
    assert "flaky_once (seed 0) during setup: RuntimeError: injected failure on the first attempt" in error[0]
    assert "flaky_training_once (seed 0) during training on ia" in error[0]
    assert "Traceback" in first.stdout and "FAILED during setup" in first.stdout  # the log keeps the traceback

    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "incomplete"
    runs = {r["strategy"]: r for r in meta["strategy_runs"]}
    assert runs["flaky_once"]["failure"]["during"] == "setup"
    assert runs["flaky_training_once"]["failure"]["during"] == "training on ia"
    assert "injected failure while training" in runs["flaky_training_once"]["failure"]["traceback"]
    assert not runs["zero_shot"].get("failure") and not runs["fft"].get("failure")
    rows = _rows(out)
    per_pass = 6 * 2  # 6 evaluated sets x 2 metrics (cer, wer); 4 passes: before training, after eo, ia, ga
    counts = {s: sum(r["strategy"] == s for r in rows) for s in ("flaky_once", "zero_shot", "flaky_training_once", "fft")}
    assert counts == {"flaky_once": 0, "zero_shot": 4 * per_pass, "flaky_training_once": 2 * per_pass,
                      "fft": 4 * per_pass}  # the failed one keeps the passes it finished (before training, eo)
    assert (out / "checkpoints" / "flaky_training_once_seed0.pt").is_file()  # what the retry resumes from
    report = (out / "report.md").read_text()
    section = report.split("## Failures", 1)[1]
    assert report.startswith("# cl_asr: languages (micro profile) — incomplete\n")
    banner = report.split("## How to read", 1)[0]
    assert "**This run is incomplete**: some strategies failed" in banner and "2 of 4 strategy runs" in banner
    assert "- `flaky_once` (seed 0): failed (raised during setup)" in banner
    assert "- `flaky_training_once` (seed 0): failed (raised during training on ia)" in banner
    summary = pd.read_csv(out / "summary.csv")
    assert dict(zip(summary.strategy, summary.status)) == {
        "zero_shot": "complete", "fft": "complete", "flaky_once": "failed", "flaky_training_once": "failed"}
    section = section.split("\n## ", 1)[0]
    assert "| flaky_once | 0 | raised | setup | RuntimeError: injected failure on the first attempt |" in section
    assert "| flaky_training_once | 0 | raised | training on ia | RuntimeError: injected failure while training |" \
        in section

    second = _run(out, markers, strategies)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "zero_shot (seed 0): already complete, skipped" in second.stdout
    assert "fft (seed 0): already complete, skipped" in second.stdout
    assert "flaky_training_once (seed 0): resumed from its checkpoint after eo" in second.stdout
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "complete" and not any(r.get("failure") for r in meta["strategy_runs"])
    rows = _rows(out)
    keys = [(r["strategy"], r["seed"], r["trained_through"], r["eval_on"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)) == 4 * 4 * per_pass
    assert "## Failures" not in (out / "report.md").read_text()
    assert "incomplete" not in (out / "report.md").read_text().split("## How to read", 1)[0]
    assert set(pd.read_csv(out / "summary.csv").status) == {"complete"}

    # What a run killed while training fft (after two of its passes) and before flaky_once started leaves: its
    # rows so far, no record for either, status running. The report says so and summarises the others.
    killed = tmp_path / "killed"
    shutil.copytree(out, killed)
    meta = json.loads((killed / "run.json").read_text())
    meta["status"] = "running"
    meta["strategy_runs"] = [r for r in meta["strategy_runs"] if r["strategy"] not in ("fft", "flaky_once")]
    # the data section: a real corpus's sets can be smaller than asked, with files left out or repaired
    meta["scenario_settings"]["utterances"].update({"per_set": {"test/eo": 2, "test/ia": 3}, "longer_than_window": 1})
    meta["scenario_settings"]["repairs"] = {"eo/test": {"left_out_longer_than_max_seconds": 7, "resampled_to_16k": 2}}
    (killed / "run.json").write_text(json.dumps(meta))
    rows = [r for r in _rows(killed) if r["strategy"] != "flaky_once"
            and not (r["strategy"] == "fft" and r["trained_through"] >= 1)]
    (killed / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = write_report(killed).read_text()
    banner = report.split("## How to read", 1)[0]
    assert "**This run is incomplete**: it did not finish (interrupted, or still running)" in banner
    assert "- `fft` (seed 0): partial, 24 of 48 result rows" in banner
    assert "- `flaky_once` (seed 0): not started" in banner
    assert "Smaller sets than the profile asks for** (not enough usable utterances): test/eo 2 (of 3)" in report
    assert "Cut by the window**: 1 utterance(s) are longer than the 10 s encoder window" in report
    assert "eo/test: 7 left out as too long (encoder window 10 s, or the set's max_seconds), 2 resampled to 16 kHz" in report
    summary = pd.read_csv(killed / "summary.csv")
    assert dict(zip(summary.strategy, summary.status)) == {
        "zero_shot": "complete", "flaky_training_once": "complete", "fft": "partial", "flaky_once": "not started"}
