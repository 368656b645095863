"""Typed YAML configuration: dataclasses are the schema, errors name the file, the key and the expected type.

`from_dict(SomeConfig, data, source="scenarios/languages.yaml")` builds a (nested) dataclass from plain
YAML data, refusing unknown keys (with the closest valid key suggested) and values of the wrong type.
Numbers written as strings that YAML did not parse (PyYAML reads `1e-3` as a string) are accepted for float
fields, because that is what the user meant.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout (for git facts); package data: cl_asr/resources


class ConfigError(ValueError):
    pass


def load_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None)) + " (or null)"
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        k, v = get_args(tp)
        return f"a mapping of {_type_name(k)} to {_type_name(v)}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    fail = ConfigError(f"{where} expects {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except ConfigError as exc:
                errors.append(exc)
        raise fail
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise fail
    if origin is list:
        if not isinstance(value, list):
            raise fail
        (item,) = get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail
        kt, vt = get_args(tp)
        return {_convert(kt, k, f"{where} key"): _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail
        return _from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise fail
        if not math.isfinite(number):  # YAML's .nan / .inf: no setting of ours means "not a number" or "infinite"
            raise ConfigError(f"{where} expects a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail
    raise ConfigError(f"{where}: unsupported field type {tp}")  # a schema bug, not a user error


def _from_dict(cls: type, data: dict, where: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(str(k), list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: unknown key {k!r}{hint}; valid keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}" if where else name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r} ({_type_name(hints[name])})")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ validation
        raise ConfigError(f"{where}: {exc}") from exc


def from_dict(cls: type, data: dict, source: str):
    """Build dataclass `cls` from `data`; `source` (a file name) prefixes every error message."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    return _from_dict(cls, data, source)


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def config_record(obj: Any) -> dict:
    """A config as run.json records it: every field, except those marked `recorded_when_set` in their metadata
    while they hold their default (fields added after results were recorded: older run directories compare equal)."""
    values = dataclasses.asdict(obj)
    for f in dataclasses.fields(obj):
        if f.metadata.get("recorded_when_set") and f.default is not dataclasses.MISSING and values[f.name] == f.default:
            del values[f.name]
    return values


def field_help(cls: type) -> dict[str, str]:
    """The `metadata={'help': ...}` of each field, for `list` and the docs."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
