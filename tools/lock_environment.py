"""Rewrite constraints.txt from the environment this runs in (README, "Reproducibility"): the header below, then
`pip freeze --all --exclude-editable` (setuptools is a dependency; pip itself is left out). Run it in a fresh virtual environment set up without the lock:

    python3 -m venv /tmp/lock && . /tmp/lock/bin/activate && pip install -e ".[dev]" && python tools/lock_environment.py

then `bash .ci/run`, and commit constraints.txt saying why it changed.
"""
import subprocess
import sys
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "constraints.txt"
HEADER = """\
# Exact versions of every package the README's set-up installs (pip install -e ".[dev]" -c constraints.txt),
# resolved on Linux x86_64, CPython 3.11. run.json records this file's sha256 and whether the installed versions
# match it (README, "Reproducibility"). Written by tools/lock_environment.py, which says how to refresh it.
"""

if __name__ == "__main__":
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"], check=True,
                            capture_output=True, text=True).stdout
    pins = [line for line in frozen.splitlines() if line.strip() and not line.startswith(("#", "pip=="))]
    LOCK.write_text(HEADER + "\n".join(pins) + "\n", encoding="utf-8")
    print(f"{LOCK}: {len(pins)} exact versions")
