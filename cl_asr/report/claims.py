"""The papers' qualitative claims (baselines/references.yaml) checked against a run's summary.

Each claim comes out `held`, `not held` or `not tested` (a strategy it needs is not in the run), with the
figures it was decided on. Figures are means over the run's seeds; with one seed no claim is tested for
significance, which the report says.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import REPO_ROOT, ConfigError, load_yaml
from ..metrics.continual import HIGHER_IS_BETTER

REFERENCES = REPO_ROOT / "baselines" / "references.yaml"
KINDS = {"better": ("a", "b"), "at_least_as_good": ("a", "b"), "best_among": ("best", "among"),
         "keeps_base": ("frozen", "changes")}


@dataclass
class Verdict:
    id: str
    text: str
    source: str
    verdict: str  # held | not held | not tested
    figures: str


def load_claims(path: Path = REFERENCES) -> list[dict]:
    data = load_yaml(path)
    claims = data.get("claims")
    if not isinstance(claims, list):
        raise ConfigError(f"{path}: expected a list under 'claims'")
    for i, c in enumerate(claims):
        kind = c.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{path}: claims[{i}] ({c.get('id')}): kind {kind!r} is not one of {sorted(KINDS)}")
        missing = [k for k in ("id", "text", "source", "measure", *KINDS[kind]) if k not in c]
        if missing:
            raise ConfigError(f"{path}: claims[{i}] ({c.get('id')}): missing {missing}")
    return claims


def _fmt(x: float) -> str:
    return f"{x:+.3f}" if x < 0 else f"{x:.3f}"


def check_claims(summary: pd.DataFrame, claims: list[dict]) -> list[Verdict]:
    out = []
    scenario = summary.scenario.iloc[0] if len(summary) else None
    for c in claims:
        m = c["measure"]
        if c.get("scenarios") and scenario not in c["scenarios"]:
            out.append(Verdict(c["id"], c["text"], c["source"], "not tested",
                               f"a claim about the {', '.join(c['scenarios'])} scenario(s)"))
            continue
        if m not in summary.columns:
            out.append(Verdict(c["id"], c["text"], c["source"], "not tested", f"this run has no {m}"))
            continue
        values = summary.groupby("strategy")[m].mean()
        need = {"better": [c.get("a"), c.get("b")], "at_least_as_good": [c.get("a"), c.get("b")],
                "best_among": list(c.get("among", [])), "keeps_base": [*c.get("frozen", []), *c.get("changes", [])]}[c["kind"]]
        present = [s for s in need if s in values.index]
        if c["kind"] == "best_among":
            absent = c["best"] not in values.index or len(present) < 2
        elif c["kind"] == "keeps_base":
            absent = not any(s in values.index for s in c["frozen"]) or not any(s in values.index for s in c["changes"])
        else:
            absent = len(present) < 2
        if absent:
            out.append(Verdict(c["id"], c["text"], c["source"], "not tested",
                               f"needs {', '.join(s for s in need if s not in values.index)} in the run"))
            continue
        higher = HIGHER_IS_BETTER.get(m, False)
        better = (lambda x, y: x > y) if higher else (lambda x, y: x < y)
        if c["kind"] in ("better", "at_least_as_good"):
            a, b = values[c["a"]], values[c["b"]]
            held = better(a, b) or (c["kind"] == "at_least_as_good" and a == b)
            figures = f"{m}: {c['a']} {_fmt(a)} vs {c['b']} {_fmt(b)}"
        elif c["kind"] == "best_among":
            ranked = values[present].sort_values(ascending=not higher)
            held = ranked.index[0] == c["best"] and (len(ranked) < 2 or ranked.iloc[0] != ranked.iloc[1])
            figures = f"{m}: " + ", ".join(f"{s} {_fmt(v)}" for s, v in ranked.items())
        else:
            frozen = values[[s for s in c["frozen"] if s in values.index]]
            changes = values[[s for s in c["changes"] if s in values.index]]
            held = bool((frozen == 0).all() and (changes != 0).all())
            moved = frozen[frozen != 0]
            figures = (f"{m}: " + ", ".join(f"{s} {_fmt(v)}" for s, v in changes.items())
                       + f"; {len(frozen) - len(moved)} of {len(frozen)} frozen-backbone strategies exactly 0"
                       + (f" (not: {', '.join(f'{s} {_fmt(v)}' for s, v in moved.items())})" if len(moved) else ""))
        out.append(Verdict(c["id"], c["text"], c["source"], "held" if held else "not held", figures))
    return out
