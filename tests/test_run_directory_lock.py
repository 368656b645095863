"""One owner per run directory: a second run on the same directory is refused at once, naming the holder, and
nothing is duplicated; the lock of a killed run is taken over by the next one."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO

from cl_asr.run_dir import RunDirectory, RunDirectoryInUse

RUN = [sys.executable, str(REPO / "run_suite.py"), "run", "--scenario", "languages", "--profile", "micro",
       "--no-progress", "--no-report", "--strategies", "zero_shot,fft,spt_decoder,spt_entire", "--seeds", "0,1"]


def _start(out: Path) -> subprocess.Popen:
    """The run in the background, its log in OUT.log (read while it runs)."""
    log = open(f"{out}.log", "w")
    # SIGINT as in a terminal: a test run started in the background (no job control) inherits SIGINT ignored
    return subprocess.Popen([*RUN, "--out", str(out)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_first_pass(out: Path, proc: subprocess.Popen) -> None:
    """Until the run has finished its first evaluation pass (so that it is interrupted mid-run, not before)."""
    for _ in range(3000):
        if " after no training" in Path(f"{out}.log").read_text():
            return
        assert proc.poll() is None, Path(f"{out}.log").read_text()[-3000:]
        time.sleep(0.02)
    raise AssertionError("no evaluation pass within a minute")


def _wait_for_owner(out: Path, proc: subprocess.Popen) -> dict:
    for _ in range(600):
        if (out / ".owner.json").is_file():
            return json.loads((out / ".owner.json").read_text())
        assert proc.poll() is None, Path(f"{out}.log").read_text()[-3000:]
        time.sleep(0.1)
    raise AssertionError("the run never took its directory")


def _rows_are_complete_and_unique(out: Path) -> None:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    keys = [(r["strategy"], r["seed"], r["trained_through"], r["eval_on"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))  # nothing written twice
    # 4 strategies x 2 seeds x 4 passes x 6 sets x 2 metrics (cer, wer)
    assert len(keys) == 4 * 2 * 4 * 6 * 2
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "complete" and len(meta["strategy_runs"]) == 8


def test_a_second_process_is_refused_in_process_too(tmp_path):
    first = RunDirectory(tmp_path / "run", writer=True)
    first.take("first command")
    code = ("import sys; from cl_asr.run_dir import RunDirectory, RunDirectoryInUse\n"
            f"try:\n    RunDirectory({str(tmp_path / 'run')!r}, writer=True).take('second')\n"
            "except RunDirectoryInUse as e:\n    print(e); sys.exit(3)\n")
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert second.returncode == 3, second.stderr
    assert f"pid {os.getpid()}" in second.stdout and "first command" in second.stdout
    first.release()
    assert not (tmp_path / "run").exists()  # created by this run, nothing written: removed again
    again = RunDirectory(tmp_path / "run", writer=True)
    again.take()
    with pytest.raises(RunDirectoryInUse):  # another handle in the same process is another owner too
        RunDirectory(tmp_path / "run", writer=True).take()
    again.release()


@pytest.mark.slow
def test_two_runs_on_one_directory_the_second_is_refused_and_nothing_is_duplicated(tmp_path):
    out = tmp_path / "run"
    first = _start(out)
    owner = _wait_for_owner(out, first)
    second = subprocess.run([*RUN, "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 2, second.stderr[-2000:]
    (line,) = [ln for ln in second.stderr.splitlines() if ln.startswith("error:")]
    assert f"is in use by pid {owner['pid']} on {owner['host']}" in line and "Traceback" not in second.stderr
    assert first.wait(timeout=900) == 0, Path(f"{out}.log").read_text()[-3000:]
    assert not (out / ".owner.json").exists()
    _rows_are_complete_and_unique(out)


@pytest.mark.slow
def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    out = tmp_path / "run"
    first = _start(out)
    owner = _wait_for_owner(out, first)
    _wait_for_first_pass(out, first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    assert (out / ".owner.json").is_file()  # left behind: the kernel released the lock itself
    again = subprocess.run([*RUN, "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"took over from pid {owner['pid']}" in again.stdout
    _rows_are_complete_and_unique(out)


@pytest.mark.slow
def test_ctrl_c_stops_with_one_line_and_the_next_run_resumes(tmp_path):
    out = tmp_path / "run"
    first = _start(out)
    _wait_for_owner(out, first)
    _wait_for_first_pass(out, first)
    first.send_signal(signal.SIGINT)
    first.wait(timeout=120)
    log = Path(f"{out}.log").read_text()
    assert first.returncode == 130 and "Traceback" not in log, log[-3000:]
    assert log.strip().splitlines()[-1] == "interrupted; run the same command again to resume"
    assert not (out / ".owner.json").exists()  # released on the way out
    again = subprocess.run([*RUN, "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    _rows_are_complete_and_unique(out)
