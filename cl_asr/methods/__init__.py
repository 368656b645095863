"""Strategies, one file each, named after the strategy (families in folders: prompts/, continual/). Every module
in this package registers its strategy on import; `get_method(name)` finds it."""
from __future__ import annotations

import importlib
import pkgutil

from .base import METHODS, Method, MethodConfig, Route, Target, register_method

for _mod in pkgutil.walk_packages(__path__, prefix=f"{__name__}."):  # every strategy file, in folders too
    importlib.import_module(_mod.name)


def get_method(name: str) -> type[Method]:
    return METHODS.get(name)


__all__ = ["METHODS", "Method", "MethodConfig", "Route", "Target", "get_method", "load_methods_from",
           "register_method"]


def load_methods_from(paths) -> None:
    """Import user files (run_suite.py --methods-from) so that their @register_method classes join the
    registry; a file already imported in this process (a Ray worker runs several jobs) is not imported again."""
    import importlib.util
    import sys
    from pathlib import Path

    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--methods-from: no such file {path}")
        spec = importlib.util.spec_from_file_location(f"cl_asr_user_methods.{path.stem}", path)
        loaded = sys.modules.get(spec.name)
        if loaded is not None and Path(loaded.__file__).resolve() == path.resolve():
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - any error in the user's file: one line naming file and line
            del sys.modules[spec.name]
            raise ValueError(f"--methods-from {path}: cannot import it: {_where(exc, path)}") from exc


def _where(exc: Exception, path) -> str:
    """`ExcType: message (line N)`, the line being the deepest frame inside the user's file."""
    import traceback
    from pathlib import Path

    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == Path(path).resolve()]
    return f"{type(exc).__name__}: {exc}".splitlines()[0] + (f" (line {lines[-1]})" if lines else "")


def method_config(name: str, profile_name: str | None = None, prompt_length: int | None = None,
                  scenario: str | None = None, tuned: bool = True):
    """A strategy's config: dataclass defaults, then baselines/<name>.yaml `config:`, then that file's
    `profiles.<profile>:` overrides, then (with `tuned`) what `run_suite.py tune` chose for this scenario and
    profile on dev sets (tuned/<scenario>.yaml, cl_asr/tune.py), then the run profile's prompt_length (if it
    sets one)."""
    import dataclasses

    from ..config import ConfigError, from_dict, load_yaml
    from ..resources import BASELINE_DIR

    cls = get_method(name)
    if not BASELINE_DIR.is_dir():  # a broken install: the defaults would silently be the dataclass's
        raise ConfigError(f"{BASELINE_DIR}: the strategies' default hyper-parameters are missing (package data "
                          "not installed); reinstall cl_asr")
    path = BASELINE_DIR / f"{name}.yaml"
    values: dict = {}
    if path.is_file():
        data = load_yaml(path)
        unknown = set(data) - {"strategy", "source", "config", "profiles"}
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; valid: strategy, source, config, profiles")
        if data.get("strategy", name) != name:
            raise ConfigError(f"{path}: strategy {data['strategy']!r} does not match the file name {name!r}")
        values.update(data.get("config") or {})
        if profile_name:
            values.update((data.get("profiles") or {}).get(profile_name) or {})
    if tuned:
        from ..tuned_defaults import tuned_values

        chosen, tuned_file = tuned_values(scenario, profile_name, name)
        if chosen:
            values.update(chosen)
            path = f"{path} + {tuned_file}"  # where the values came from, for any error message
    config = from_dict(cls.config_class, values, str(path))
    if prompt_length is not None and any(f.name == "prompt_length" for f in dataclasses.fields(config)):
        config = dataclasses.replace(config, prompt_length=prompt_length)
    return config
