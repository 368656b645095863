"""Scenarios: YAML files in scenarios/ (package data, cl_asr/resources; or any path) built by a registered builder
module."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from ..config import ConfigError, from_dict, load_yaml
from ..registry import UnknownNameError
from .base import (
    BUILDERS, REAL_PRESERVATION, ProfileConfig, Scenario, ScenarioBuilder, parse_real_preservation, register_builder,
)

from ..resources import SCENARIO_DIR  # noqa: E402  (package data: scenarios/*.yaml)

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")


def available_scenarios() -> dict[str, str]:
    """name -> one-line description, for every YAML in scenarios/."""
    out = {}
    for path in sorted(SCENARIO_DIR.glob("*.yaml")):
        try:
            out[path.stem] = str(load_yaml(path).get("description", "")).strip().splitlines()[0]
        except (ConfigError, IndexError):
            out[path.stem] = "(unreadable)"
    return out


def scenario_outlines() -> dict[str, dict]:
    """name -> description, experiences, preservation sets, metric and data source, for every YAML in
    scenarios/ (a file that does not load says why instead)."""
    out = {}
    for path in sorted(SCENARIO_DIR.glob("*.yaml")):
        try:
            builder = load_scenario_builder(str(path))
            desc = " ".join(str(builder.config.description).split())
            out[path.stem] = {"description": desc, **builder.outline()}
            out[path.stem]["preservation"] = [*out[path.stem]["preservation"],
                                              *(REAL_PRESERVATION[s].set_name for s in builder.real_preservation)]
        except (ConfigError, ValueError, KeyError) as exc:
            out[path.stem] = {"description": f"(does not load: {exc})"}
    return out


def scenario_path(ref: str) -> Path:
    path = Path(ref)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"{path}: scenario file not found")
        return path
    if not SCENARIO_DIR.is_dir():  # a broken install, not a typo
        raise ConfigError(f"{SCENARIO_DIR}: the scenario files are missing (package data not installed); "
                          "reinstall cl_asr")
    candidate = SCENARIO_DIR / f"{ref}.yaml"
    if not candidate.is_file():
        import difflib

        names = list(available_scenarios())
        close = difflib.get_close_matches(ref, names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownNameError(f"unknown scenario {ref!r}.{hint} Valid: {', '.join(names)}.")
    return candidate


def load_scenario_builder(ref: str) -> ScenarioBuilder:
    path = scenario_path(ref)
    data = load_yaml(path)
    builder_name = data.get("builder")
    if not isinstance(builder_name, str):
        raise ConfigError(f"{path}: key 'builder' (a string naming the scenario builder) is required")
    try:
        builder_cls = BUILDERS.get(builder_name)
    except UnknownNameError as exc:
        raise UnknownNameError(f"{path}: key 'builder': {exc}") from None
    # `real_preservation` (base.REAL_PRESERVATION) is a key of every scenario file, whatever its builder: taken out
    # here, added by ScenarioBuilder.assemble
    real = parse_real_preservation(data.pop("real_preservation", None), str(path))
    config = from_dict(builder_cls.config_class, data, str(path))
    for key in ("experiences", "base_languages"):  # a set listed twice could not be told apart in the results
        names = [str(getattr(x, "name", x)) for x in getattr(config, key, [])]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"{path}: {key} lists {', '.join(map(repr, twice))} more than once; each set must "
                              "have its own name")
    builder = builder_cls(config, str(path), real_preservation=real)
    if real:
        outline = builder.outline()
        taken = {str(x) for x in (*outline["experiences"], *outline["preservation"])}
        for source in real:
            if REAL_PRESERVATION[source].set_name in taken:
                raise ConfigError(f"{path}: real_preservation {source!r} adds the set "
                                  f"{REAL_PRESERVATION[source].set_name!r}, which the scenario already has")
    return builder


__all__ = [
    "BUILDERS", "ProfileConfig", "Scenario", "ScenarioBuilder", "available_scenarios", "load_scenario_builder",
    "scenario_outlines",
    "register_builder", "scenario_path",
]
