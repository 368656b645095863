"""A non-editable install finds every scenario file and every strategy's defaults: a wheel is built, installed
into a fresh virtual environment, and `list` there prints what the editable install prints."""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".git", "runs", ".venv", "build", "dist", "__pycache__", "*.egg-info", ".pytest_cache",
                              ".ci", "reports")


def _list(python: str, cwd: Path, env: dict) -> str:
    out = []
    for args in (["list"], ["list", "scenarios"], ["list", "strategies", "--backbone", "tiny:random"]):
        r = subprocess.run([python, "-m", "cl_asr.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        out.append(r.stdout)
    return "\n".join(out)


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_lists_what_the_editable_install_lists(tmp_path):
    source = tmp_path / "source"  # a clean copy: no stale build/ from earlier builds
    shutil.copytree(REPO, source, ignore=SKIP, symlinks=True)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("cl_asr-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                                str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # the dependencies (torch, transformers, ...) from this environment, as a plain path: its .pth files (the
    # editable install of cl_asr among them) are not processed there, so cl_asr can only come from the wheel
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import cl_asr; print(cl_asr.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where

    from_wheel = _list(str(venv / "bin" / "python"), elsewhere, env)
    from_checkout = _list(sys.executable, REPO, env)
    assert from_wheel == from_checkout
    for name in ("languages", "code_switching", "speakers", "text_domains", "spt_decoder", "lr=0.03"):
        assert name in from_wheel
