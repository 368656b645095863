"""The environment lock (constraints.txt, README "Reproducibility"): it pins every dependency pyproject.toml
declares, run.json's record says whether the installed versions are the locked ones, and in CI (`.ci/run`
installs from the lock and sets CL_ASR_REQUIRE_LOCK) they are."""
import os
import re
import tomllib

import pytest
from helpers import REPO

from cl_asr.env_info import LOCK_FILE, environment_lock


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_the_lock_pins_every_declared_dependency():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]} | {
        _name(r) for extra in project["optional-dependencies"].values() for r in extra}
    pinned = {line.split("==")[0].strip().lower().replace("_", "-") for line in LOCK_FILE.read_text().splitlines()
              if "==" in line and not line.startswith("#")}
    assert declared - pinned == set(), "constraints.txt lacks these: refresh it (tools/lock_environment.py)"
    assert not any(line.startswith("-e") for line in LOCK_FILE.read_text().splitlines())  # not the project itself


def test_the_record_names_versions_that_differ_from_the_lock(tmp_path):
    lock = tmp_path / "constraints.txt"
    lock.write_text("# a comment\ntorch==0.0.1\nno-such-package-xyz==1.0\n")
    record = environment_lock(lock)
    assert record["pins"] == 2 and record["matches"] is False
    assert record["differs"]["torch"]["locked"] == "0.0.1" and record["differs"]["torch"]["installed"]
    assert record["differs"]["no-such-package-xyz"] == {"locked": "1.0", "installed": None}
    assert len(record["sha256"]) == 64
    assert environment_lock(tmp_path / "missing.txt") == {"file": None, "sha256": None, "matches": None}


@pytest.mark.skipif(not os.environ.get("CL_ASR_REQUIRE_LOCK"), reason="set by .ci/run, which installs from the lock")
def test_ci_installed_exactly_the_locked_versions():
    record = environment_lock()
    assert record["matches"], record["differs"]
