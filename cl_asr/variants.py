"""Variants of a strategy, and overrides of the scenario profile, from the command line (README "Variants").

A variant is a registered strategy (its *base*) with some config values changed, run as a strategy of its own:
its own rows in results.jsonl, its own line in summary.csv, the report and compare, its own checkpoint and
Ray job. Two ways to write one:

- inline, in --strategies: `base[key=value,key2=value2]`, each value a YAML scalar (`lr=3e-2`,
  `eval_routing=lid`, `prompt_length=128`, `freeze=true`) or a YAML flow list (`layers=[0,1]`). Its name is
  the canonical spelling: keys sorted, values as the validated config holds them (`lr=1e-1` and `lr=0.1` are
  both `spt_decoder[lr=0.1]`);
- in a variants file (--variants FILE.yaml), a mapping `name: {strategy: base, config: {key: value}}`; its name
  is the mapping's key (letters, digits and `_ . + = -`; not a registered strategy's name).

The overrides go on top of the base's resolved config (dataclass defaults, baselines/<base>.yaml, the run
profile's prompt_length: `methods.method_config`) and are validated by `config.from_dict` like the base config:
an unknown key (with the closest valid key suggested), a wrong type, a non-finite number or a value the config's
own checks refuse is one error naming the variant and the key. A variant that changes nothing, two entries with
the same name, or two with the same base and the same resulting config are refused.

`--set key=value` overrides a field of the scenario profile (ProfileConfig: n_train, epochs, ...) for the run,
validated the same way (`with_overrides`).

A row name is a display name; where it becomes a file or directory name (checkpoints/<name>_seed<N>.pt, the
Ray executor's jobs/<name>_seed<N>/ and task names, the report's plots/matrix_<name>.png) it goes through
`file_component`, which keeps a plain strategy name as it is.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, from_dict, load_yaml

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")  # a variants file's variant name
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a config field
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # a name that is already a safe file name component


# -- syntax -------------------------------------------------------------------------------------------------------
def split_top_level(text: str, where: str) -> list[str]:
    """`text` split at the commas outside brackets, braces and quotes: `a,b[x=1,y=2],c` -> [a, b[x=1,y=2], c]
    (items stripped; empty items dropped)."""
    items, stack, start, quote = [], [], 0, None
    pairs = {"]": "[", "}": "{"}
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}":
            if not stack or stack.pop() != pairs[ch]:
                raise ValueError(f"{where} {text!r}: a {ch!r} without its {pairs[ch]!r}")
        elif ch == "," and not stack:
            items.append(text[start:i])
            start = i + 1
    if quote:
        raise ValueError(f"{where} {text!r}: an unclosed {quote}")
    if stack:
        raise ValueError(f"{where} {text!r}: a {stack[-1]!r} without its {'}' if stack[-1] == '{' else ']'!r}")
    items.append(text[start:])
    return [s.strip() for s in items if s.strip()]


def parse_value(text: str) -> Any:
    """A value as YAML reads it (`3e-2` stays the string PyYAML makes of it; a float field accepts it)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # e.g. an unbalanced quote: the config's type check says what is wrong with it


def parse_assignment(text: str, where: str) -> tuple[str, Any]:
    """`key=value` -> (key, value)."""
    key, eq, value = text.partition("=")
    key = key.strip()
    if not eq or not key or not value.strip():
        raise ValueError(f"{where} {text!r}: expected key=value")
    if not KEY.fullmatch(key):
        raise ValueError(f"{where} {text!r}: {key!r} is not a config key")
    return key, parse_value(value.strip())


def parse_inline(entry: str) -> tuple[str, dict] | None:
    """`base[key=value,...]` -> (base, {key: value}); None for a plain name."""
    if "[" not in entry and "]" not in entry:
        return None
    m = re.fullmatch(r"\s*([^\[\],\s]+)\s*\[(.*)\]\s*", entry, re.DOTALL)
    if not m:
        raise ValueError(f"--strategies {entry!r}: a variant is written base[key=value,...], e.g. "
                         "spt_entire[eval_routing=lid,prompt_length=128]")
    base, inner = m.groups()
    items = split_top_level(inner, f"--strategies {entry!r}:")
    if not items:
        raise ValueError(f"--strategies {entry!r}: the brackets name no override (write base[key=value,...])")
    overrides: dict = {}
    for item in items:
        key, value = parse_assignment(item, f"--strategies {entry!r}:")
        if key in overrides:
            raise ValueError(f"--strategies {entry!r}: sets {key} twice")
        overrides[key] = value
    return base, overrides


def render(value: Any) -> str:
    """A config value as a variant name writes it: reads back (YAML) as the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)  # the shortest text that reads back as this number: 0.1, 1e-05, 128
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render(v) for v in value) + "]"
    if isinstance(value, str) and value and not re.search(r"[\s,\[\]{}=:#'\"]", value) \
            and parse_value(value) == value:
        return value
    return json.dumps(value, ensure_ascii=False)  # quoted: JSON strings and mappings are YAML too


def inline_name(base: str, overrides: dict) -> str:
    """The canonical name of an inline variant: `base[key=value,...]`, keys sorted."""
    return f"{base}[{','.join(f'{k}={render(v)}' for k, v in sorted(overrides.items()))}]"


def describe(overrides: dict) -> str:
    """`key=value, key2=value2` (the report's Variants table, the --set line)."""
    return ", ".join(f"{k}={render(v)}" for k, v in overrides.items())


def file_component(name: str) -> str:
    """`name` as one file or directory name component (no '/', brackets, '=', ',', spaces...). A plain strategy
    name (letters, digits, `_ . -`, at most 100 characters) is kept as it is, so existing run directories keep
    their checkpoint and job paths; anything else becomes a readable stand-in plus 8 hex digits of the name's
    SHA-1, so that two names never share a file: `spt_decoder[lr=0.1]` -> `spt_decoder_lr_0.1_3c1f...`."""
    if _PLAIN.fullmatch(name) and name not in (".", ".."):
        return name
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.-")[:80] or "strategy"
    return f"{readable}_{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"


# -- variants files -----------------------------------------------------------------------------------------------
@dataclass
class VariantSpec:
    """One entry of a variants file."""

    strategy: str = field(metadata={"help": "the registered strategy this is a variant of"})
    config: dict[str, Any] = field(default_factory=dict, metadata={"help": "config keys and their values"})


def load_variants_file(path: Path) -> dict[str, dict]:
    """A variants file (--variants): `name: {strategy: base, config: {key: value}}` per variant, in file order ->
    {name: {"strategy": base, "config": {...}}}. Names, keys and the mapping's shape are checked here; the config
    values against the base's config when the run is checked (runner.check_request)."""
    path = Path(path)
    data = load_yaml(path)
    if not data:
        raise ConfigError(f"--variants {path}: names no variant")
    out = {}
    for name, spec in data.items():
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ConfigError(f"--variants {path}: variant name {name!r}: use letters, digits and _ . + = - "
                              "(it names the variant's rows; brackets are for inline variants)")
        if spec is None:
            spec = {}
        parsed = from_dict(VariantSpec, spec, f"--variants {path}: variant {name}")
        out[name] = {"strategy": parsed.strategy, "config": dict(parsed.config)}
    return out


# -- resolution ---------------------------------------------------------------------------------------------------
def with_overrides(config, overrides: dict, where: str):
    """`config` (a dataclass) with `overrides` applied, validated by config.from_dict as its YAML would be:
    errors are one line starting with `where`."""
    values = dataclasses.asdict(config)
    for name in getattr(config, "derived", ()):  # a field that followed another (n_dev = n_test) follows it again
        if name not in overrides:
            values[name] = None
    try:
        return from_dict(type(config), {**values, **overrides}, where)
    except ConfigError as exc:  # "WHERE.key expects ..." reads better as "WHERE: key expects ..."
        text = str(exc)
        raise ConfigError(f"{where}: {text[len(where) + 1:]}" if text.startswith(f"{where}.") else text) from None


@dataclass
class Resolved:
    """One entry of a run's strategies, resolved."""

    entry: str  # as the request wrote it: the row name the run uses
    name: str  # its canonical spelling (the same for a plain strategy or a named variant)
    strategy: str  # the registered strategy (the base of a variant)
    overrides: dict  # a variant's validated values; {} for a plain strategy
    config: Any = None

    @property
    def is_variant(self) -> bool:
        return bool(self.overrides)

    def record(self) -> dict:
        """What run.json keeps of a variant (config.variants, and each strategy_runs record)."""
        return {"strategy": self.strategy, "overrides": dict(self.overrides)}


def base_of(entry: str, named: dict) -> tuple[str, dict | None, str]:
    """(base strategy, raw overrides or None for a plain strategy, where-text for errors) of one entry."""
    if entry in named:
        base = named[entry]["strategy"]
        return base, dict(named[entry].get("config") or {}), f"variant {entry} (of {base})"
    parsed = parse_inline(entry)
    if parsed is None:
        return entry, None, f"strategy {entry}"
    return parsed[0], parsed[1], f"variant {entry}"


def resolve(entries: list[str], named: dict, base_config: Callable[[str], Any], registered: Callable[[str], bool]
            ) -> list[Resolved]:
    """Every entry of `entries` (plain strategies, inline variants, names of `named` variants) with its config:
    `base_config(base)` with the overrides applied and validated. Refuses (ConfigError / ValueError) a bad
    override, a variant that changes nothing, a variant name that is a strategy's, and two entries with the same
    name or with the same base and resulting config."""
    out: list[Resolved] = []
    for entry in entries:
        base, raw, where = base_of(entry, named)
        config = base_config(base)
        if raw is None:
            out.append(Resolved(entry, entry, base, {}, config))
            continue
        if entry in named and registered(entry):
            raise ConfigError(f"variant {entry}: that is a registered strategy's name; give the variant another")
        if not raw:
            raise ConfigError(f"{where}: its config sets nothing: a variant changes at least one key of {base}")
        changed = with_overrides(config, raw, where)
        values = dataclasses.asdict(changed)
        overrides = {k: values[k] for k in raw}
        if values == dataclasses.asdict(config):
            raise ConfigError(f"{where} changes nothing: {base} already has {describe(overrides)}; run {base} itself")
        out.append(Resolved(entry, entry if entry in named else inline_name(base, overrides), base, overrides,
                            changed))
    seen: dict[str, Resolved] = {}
    for r in out:
        other = seen.get(r.name)
        if other is not None:
            same = f" ({other.entry!r} and {r.entry!r})" if other.entry != r.entry else ""
            raise ValueError(f"--strategies names a strategy twice: {r.name}{same}; each row name once")
        seen[r.name] = r
        twin = next((o for o in seen.values() if o is not r and o.strategy == r.strategy
                     and dataclasses.asdict(o.config) == dataclasses.asdict(r.config)), None)
        if twin is not None:
            raise ValueError(f"{twin.name} and {r.name} are the same config of {r.strategy}: they would give the "
                             "same results twice; run one of them")
    return out
