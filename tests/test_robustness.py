"""Robustness: training faults (NaN/inf losses), and results that survive crashes."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent


def cli(*args):
    return subprocess.run([sys.executable, str(REPO / "run_suite.py"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=900)


def test_nonfinite_losses_are_skipped_counted_and_end_an_experience_without_ending_the_run(tmp_path):
    out = tmp_path / "run"
    proc = cli("run", "--methods-from", str(REPO / "tests" / "data" / "nan_loss_methods.py"), "--strategies",
               "nan_once,nan_always_second", "--profile", "micro", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = {s["strategy"]: s for s in json.loads((out / "run.json").read_text())["strategy_runs"]}
    assert runs["nan_once"]["training_faults"] == [{
        "experience": "eo", "skipped_steps": 1, "steps": 2, "ended_early": False,
        "reason": "1 of 2 steps had a non-finite loss or gradient and were skipped"}]
    (fault,) = runs["nan_always_second"]["training_faults"]
    assert fault["experience"] == "ia" and fault["skipped_steps"] == 2 and fault["ended_early"]
    assert "nan_always_second: training fault on ia: 2 non-finite losses" in proc.stdout
    # the run went on: both strategies have complete error matrices, the third experience was trained
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary.strategy) == ["nan_always_second", "nan_once"] and summary.avg_error.notna().all()
    # skipped steps change nothing: after ia (all steps skipped) every set scores as after eo
    r = pd.read_json(out / "results.jsonl", lines=True)
    r = r[(r.strategy == "nan_always_second")].pivot_table(index=["eval_on", "metric"], columns="trained_through",
                                                             values="value")
    assert (r[0] == r[1]).all() and not (r[1] == r[2]).all()
    md = (out / "report.md").read_text()
    assert "## Training faults" in md and "| nan_always_second | 0 | ia | 2 of 2 | yes |" in md
    assert "| nan_once | 0 | eo | 1 of 2 | no |" in md


def test_repair_drops_only_a_half_written_last_line(tmp_path):
    from cl_asr.results import read_jsonl, repair_jsonl

    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"')
    assert repair_jsonl(path) == len('{"a": 3, "b"')
    assert [r["a"] for r in read_jsonl(path)] == [1, 2] and path.read_text().endswith("}\n")
    assert repair_jsonl(path) == 0  # intact: untouched
    path.write_text('{"a": 1}\n{"a": 2}')  # complete row, newline lost: kept
    assert repair_jsonl(path) == 0 and path.read_text() == '{"a": 1}\n{"a": 2}\n'
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')  # damage in the middle is not a crash's: named, not repaired
    assert repair_jsonl(path) == 0
    import pytest

    with pytest.raises(ValueError, match=r"r\.jsonl:2: not a JSON line"):
        read_jsonl(path)


def test_resume_repairs_a_torn_append_and_refuses_changed_data(tmp_path):
    out = tmp_path / "run"
    args = ("run", "--strategies", "zero_shot", "--profile", "micro", "--out", str(out), "--no-progress",
            "--no-report")
    first = cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    results = (out / "results.jsonl").read_text()
    meta = json.loads((out / "run.json").read_text())
    assert set(meta["checksums"]["data"]) >= {"train/eo", "test/eo", "preservation/en"}
    assert len(meta["checksums"]["backbone"]) == 32
    # a crash while appending the last cell: its rows half written
    lines = results.splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:-3]) + lines[-3][: len(lines[-3]) // 2])
    again = cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "repaired results.jsonl: dropped a half-written last line" in again.stdout
    # costs were recorded and the checkpoint removed, but a row is missing: the strategy is redone
    assert "strategy zero_shot (seed 0)" in again.stdout and "already complete" not in again.stdout
    assert (out / "results.jsonl").read_text() == results  # redone, identical, nothing duplicated
    # other data under the same run directory: refused, naming the set, nothing touched
    meta["checksums"]["data"]["test/ia"] = "0" * 32
    (out / "run.json").write_text(json.dumps(meta))
    changed = cli(*args)
    assert changed.returncode == 2 and "other data or weights" in changed.stderr and "test/ia" in changed.stderr
    assert (out / "results.jsonl").read_text() == results


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_results(tmp_path):
    """Five SIGKILLs at random points of a micro run (mid-training, mid-evaluation, mid-checkpoint, mid-append),
    each followed by the same command: the results files end byte-identical to an uninterrupted run's."""
    import random
    import signal
    import time

    strategies = "zero_shot,fft,spt_entire,replay,lapt"  # full model, hooks, a replay buffer, routing state

    def command(out):
        return [sys.executable, str(REPO / "run_suite.py"), "run", "--strategies", strategies, "--profile", "micro",
                "--out", str(out), "--no-progress", "--no-report"]

    reference = tmp_path / "reference"
    assert subprocess.run(command(reference), cwd=REPO, capture_output=True, timeout=900).returncode == 0

    out, log = tmp_path / "killed", tmp_path / "log.txt"
    rng = random.Random(7)
    kills = 0
    resumed = []
    while True:
        with open(log, "w") as f:
            proc = subprocess.Popen(command(out), cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
        if kills < 5:  # wait for 1-3 more evaluation passes, then kill a random moment later
            passes = rng.randint(1, 3)
            start = time.monotonic()
            while proc.poll() is None and log.read_text().count(" after ") < passes and time.monotonic() - start < 300:
                time.sleep(0.05)
            time.sleep(rng.uniform(0, 1.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                resumed.append(log.read_text())
                continue
        assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
        break
    assert kills == 5
    final_log = log.read_text()
    assert "resumed from its checkpoint" in final_log or any("resumed from its checkpoint" in t for t in resumed)
    for name in ("results.jsonl", "predictions.jsonl"):
        assert (out / name).read_text() == (reference / name).read_text(), name
    assert not (out / "checkpoints").exists()  # removed once every strategy is complete
    ref_runs = {s["strategy"]: s for s in json.loads((reference / "run.json").read_text())["strategy_runs"]}
    runs = {s["strategy"]: s for s in json.loads((out / "run.json").read_text())["strategy_runs"]}
    assert runs.keys() == ref_runs.keys()
    for name, r in runs.items():
        assert r["trainable_params"] == ref_runs[name]["trainable_params"]
        assert len(r["train_seconds_per_experience"]) == len(ref_runs[name]["train_seconds_per_experience"])
