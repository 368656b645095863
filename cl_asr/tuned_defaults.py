"""The tuned-defaults files: what `run_suite.py tune` (cl_asr/tune.py) chose on dev sets, per scenario, profile and
strategy, with its provenance. `tuned/<scenario>.yaml` (package data, cl_asr/resources/tuned; the top-level
`tuned/` is the user-facing link):

    profiles:
      quick:
        spt_decoder:
          config: {lr: 0.0123}
          provenance: {objective: ..., dev_error: ..., trials: ..., search_space: ..., all_trials: [...], ...}

Runs of that scenario and profile take `config` over baselines/<strategy>.yaml (method_config) and record the
file's hash in run.json (`tuned_defaults`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from . import resources
from .log import log
from .results import write_text_atomic

HEADER = ("# Tuned defaults, written by `run_suite.py tune` (cl_asr/tune.py): searched on dev sets only, never on a\n"
          "# test set. Runs of this scenario and profile use them (run.json records this file's hash).\n")


def tuned_path(scenario: str) -> Path:
    return resources.TUNED_DIR / f"{scenario}.yaml"


def read_tuned_file(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    return data or {"profiles": {}}


def write_tuned(path: Path, profile: str, chosen: dict) -> Path:
    """Merge `chosen` (strategy -> {config, provenance}) into the tuned-defaults file under `profile`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = read_tuned_file(path)
    data.setdefault("profiles", {}).setdefault(profile, {}).update(chosen)
    write_text_atomic(path, HEADER + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110))
    log(f"tuned defaults: {path}")
    return path


def tuned_values(scenario: str | None, profile: str | None, strategy: str) -> tuple[dict, Path | None]:
    """(config values, file) the tuned-defaults file holds for this scenario, profile and strategy."""
    if not scenario or not profile:
        return {}, None
    path = tuned_path(scenario)
    if not path.is_file():
        return {}, None
    entry = ((read_tuned_file(path).get("profiles") or {}).get(profile) or {}).get(strategy)
    if not entry:
        return {}, None
    return dict(entry.get("config") or {}), path


def tuned_record(scenario: str, profile: str, strategies: list[str]) -> dict | None:
    """What run.json keeps of the tuned defaults a run used: the file, its hash, the strategies taken from it."""
    path = tuned_path(scenario)
    used = [s for s in strategies if tuned_values(scenario, profile, s)[0]]
    if not used:
        return None
    return {"file": f"tuned/{path.name}", "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "profile": profile, "strategies": used}
