"""The Ray executor: the same grid on a local Ray instance with two workers gives the local executor's files;
a re-submitted run skips finished jobs; a job that fails once is retried; a job that keeps failing is reported
and recorded without sinking the others."""
import json

import pytest
from helpers import REPO, run_suite as cli

GRID = ["--scenario", "languages", "--strategies", "zero_shot,spt_decoder,spt_entire", "--seeds", "0,1",
        "--profile", "micro", "--no-progress"]


@pytest.fixture(scope="module")
def local_and_ray(tmp_path_factory):
    base = tmp_path_factory.mktemp("grid")
    local = cli("run", *GRID, "--out", str(base / "local"))
    assert local.returncode == 0, local.stderr[-3000:]
    ray = cli("run", *GRID, "--executor", "ray", "--workers", "2", "--out", str(base / "ray"))
    assert ray.returncode == 0, ray.stderr[-3000:] + ray.stdout[-3000:]
    return base / "local", base / "ray", ray


def test_ray_grid_gives_the_local_executors_results(local_and_ray):
    local, ray, proc = local_and_ray
    assert (ray / "results.jsonl").read_bytes() == (local / "results.jsonl").read_bytes()
    assert (ray / "predictions.jsonl").read_bytes() == (local / "predictions.jsonl").read_bytes()
    runs = lambda d: [(s["strategy"], s["seed"], s["trainable_params"])  # noqa: E731
                      for s in json.loads((d / "run.json").read_text())["strategy_runs"]]
    assert runs(ray) == runs(local)  # same jobs, same order (seed by seed, strategies as given)
    meta = json.loads((ray / "run.json").read_text())
    assert meta["status"] == "complete" and meta["config"]["executor"] == "ray"
    assert set(meta["executor"]["attempts"].values()) == {1}
    assert (ray / "report.md").is_file() and (ray / "summary.csv").is_file()
    for job in meta["config"]["grid"]:  # every job in the usual layout of its own, no checkpoint left
        assert (ray / "jobs" / job / "results.jsonl").is_file() and not (ray / "jobs" / job / "checkpoints").exists()
    assert "[6/6]" in proc.stdout + proc.stderr  # overall progress


def test_resubmitted_ray_run_skips_finished_jobs(local_and_ray):
    _, ray, _ = local_and_ray
    before = (ray / "results.jsonl").read_bytes()
    again = cli("run", *GRID, "--executor", "ray", "--workers", "2", "--out", str(ray))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already complete, skipped: zero_shot_seed0" in again.stdout + again.stderr
    assert "0 job(s) handed to Ray" in again.stdout + again.stderr
    assert (ray / "results.jsonl").read_bytes() == before
    other = cli("run", *GRID[:-3], "--profile", "quick", "--executor", "ray", "--out", str(ray))
    assert other.returncode == 2 and "profile='micro'" in other.stderr  # another grid is refused, named
    # a finished job run with another strategy config is refused, not skipped (as the local executor does)
    job_meta = ray / "jobs" / "spt_decoder_seed1" / "run.json"
    kept = job_meta.read_text()
    meta = json.loads(kept)
    next(s for s in meta["strategy_runs"] if s["strategy"] == "spt_decoder")["config"]["lr"] = 123.0
    job_meta.write_text(json.dumps(meta))
    changed = cli("run", *GRID, "--executor", "ray", "--out", str(ray))
    job_meta.write_text(kept)
    assert changed.returncode == 2 and "spt_decoder (seed 1) run with config" in changed.stderr
    assert (ray / "results.jsonl").read_bytes() == before


def test_executor_options_are_checked_before_anything_runs(local_and_ray, tmp_path):
    local, _, _ = local_and_ray
    mixed = cli("run", *GRID, "--executor", "ray", "--out", str(local))
    assert mixed.returncode == 2 and "holds a run of the local executor" in mixed.stderr
    misplaced = cli("run", *GRID, "--workers", "2", "--out", str(tmp_path / "x"))
    assert misplaced.returncode == 2 and "--workers is for --executor ray" in misplaced.stderr
    assert not (tmp_path / "x").exists()


def test_a_job_failing_once_is_retried_and_one_always_failing_does_not_sink_the_others(tmp_path):
    out = tmp_path / "run"
    proc = cli("run", "--scenario", "languages", "--strategies", "zero_shot,flaky_once,always_fails",
               "--profile", "micro", "--no-progress", "--executor", "ray", "--workers", "2", "--retries", "1",
               "--methods-from", str(REPO / "tests" / "data" / "failing_methods.py"), "--out", str(out),
               env={"CL_ASR_TEST_MARKERS": str(tmp_path / "markers")})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "always_fails_seed0: RuntimeError: injected failure on every attempt" in proc.stderr
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "incomplete"
    assert meta["executor"]["attempts"] == {"zero_shot_seed0": 1, "flaky_once_seed0": 2, "always_fails_seed0": 2}
    runs = {s["strategy"]: s for s in meta["strategy_runs"]}
    assert "failure" not in runs["flaky_once"] and "failure" not in runs["zero_shot"]
    assert runs["always_fails"]["failure"]["kind"] == "job failed"
    assert runs["always_fails"]["failure"]["during"] == "setup"  # the job's own record, gathered
    assert "injected failure on every attempt" in runs["always_fails"]["failure"]["traceback"]
    assert "| always_fails | 0 | job failed | setup |" in (out / "report.md").read_text()
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["strategy"] for r in rows} == {"zero_shot", "flaky_once"}
    # zero-shot and its flaky twin decode alike: the retried job's results are whole and right
    value = lambda name: [(r["eval_on"], r["metric"], r["value"]) for r in rows if r["strategy"] == name]  # noqa: E731
    assert value("flaky_once") == value("zero_shot")
    assert (out / "report.md").is_file()
