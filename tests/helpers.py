"""Shared by the tests that run the command line in a subprocess, as a user would."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_suite(*args, cwd=REPO, env=None, timeout=1200) -> subprocess.CompletedProcess:
    """`python run_suite.py ARGS` in `cwd` (the repository by default), with `env` added to this environment."""
    return subprocess.run([sys.executable, str(REPO / "run_suite.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
