"""The papers' qualitative claims (baselines/references.yaml) checked against a run's summary.

Each claim comes out `held`, `not held` or `not tested` (a strategy it needs is not in the run), with the
figures it was decided on (means over the run's seeds) and, where the report can test it, whether the
difference behind the verdict is significant (a paired bootstrap over utterances and seeds, stats.py).

Its `decision` reads the verdict with that test: `held (significant)`, `not held (significant)`, or, when the
difference is not significant, `not decided at this test-set size`, with the comparison's minimum detectable
difference (MDD, stats.py) and whether its 95% interval is narrower than +-0.03 (stats.RESOLUTION). Claims
decided exactly (frozen-backbone strategies leave the base error exactly unchanged) say `(exact)`; runs
without per-utterance counts have no test, so no decision from one and no MDD.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import ConfigError, load_yaml
from ..metrics.continual import HIGHER_IS_BETTER
from .stats import RESOLUTION

from ..resources import BASELINE_DIR  # noqa: E402

REFERENCES = BASELINE_DIR / "references.yaml"
KINDS = {"better": ("a", "b"), "at_least_as_good": ("a", "b"), "best_among": ("best", "among"),
         "keeps_base": ("frozen", "changes")}


@dataclass
class Verdict:
    id: str
    text: str
    source: str
    verdict: str  # held | not held | not tested
    figures: str
    significance: str = ""  # e.g. "significant (p=0.002)", "not significant (p=0.41)", "" where untested
    # held (significant) | not held (significant) | not decided at this test-set size (...) | held (exact) |
    # not held (exact) | no test (...) | "" where not tested
    decision: str = ""
    mdd: float = math.nan  # minimum detectable difference of the comparison behind the decision (NaN: none)


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


NO_TEST = "no test (no per-utterance counts: no interval, significance or MDD)"


def _significance(compare, a: str, b: str, measure: str):
    """(significance, figure, Difference) of the paired difference a - b, or ("", "", None) without a test."""
    d = compare(a, b, measure) if compare else None
    if d is None or d.p != d.p:  # no per-utterance counts, or a NaN p
        return "", "", None
    verdict = "significant" if d.significant else "not significant"
    return f"{verdict} (p={d.p:.3f})", f"; difference {d.text()}", d


def _decision(d, higher: bool) -> str:
    """What the paired test d (claimed-better strategy minus the other) decides about the claim."""
    if d is None:
        return NO_TEST
    claimed_better = d.low > 0 if higher else d.high < 0
    claimed_worse = d.high < 0 if higher else d.low > 0
    if claimed_better:
        return "held (significant)"
    if claimed_worse:
        return "not held (significant)"
    narrow = "narrower" if d.narrower_than(RESOLUTION) else "wider"
    return (f"not decided at this test-set size: not significant, MDD {d.mdd_text()}; the 95% interval "
            f"(±{d.half_width:.3f}) is {narrow} than ±{RESOLUTION:g}")


def check_claims(summary: pd.DataFrame, claims: list[dict], compare=None) -> list[Verdict]:
    """compare(a, b, measure) -> stats.Difference of a - b, or None: makes the verdicts say whether the
    difference they rest on is significant."""
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
            significance, diff, d = _significance(compare, c["a"], c["b"], m)
            decision = _decision(d, higher)
            figures = f"{m}: {c['a']} {_fmt(a)} vs {c['b']} {_fmt(b)}{diff}"
        elif c["kind"] == "best_among":
            ranked = values[present].sort_values(ascending=not higher)
            held = ranked.index[0] == c["best"] and (len(ranked) < 2 or ranked.iloc[0] != ranked.iloc[1])
            significance, diff, d = _significance(compare, ranked.index[0], ranked.index[1], m)
            figures = f"{m}: " + ", ".join(f"{s} {_fmt(v)}" for s, v in ranked.items()) + (
                f"; best minus runner-up {diff[len('; difference '):]}" if diff else "")
            if held:
                decision = _decision(d, higher)  # the claimed best against the runner-up
            else:  # the claimed best against the strategy that is best on this run
                top = ranked.index[0] if ranked.index[0] != c["best"] else ranked.index[1]
                _, _, d = _significance(compare, c["best"], top, m)
                decision = _decision(d, higher)
                if d is not None:
                    figures += f"; {c['best']} minus {top} {d.text()}"
        else:
            frozen = values[[s for s in c["frozen"] if s in values.index]]
            changes = values[[s for s in c["changes"] if s in values.index]]
            held = bool((frozen == 0).all() and (changes != 0).all())
            significance = "exact (no test needed)" if (frozen == 0).all() else ""
            decision, d = ("held (exact)" if held else "not held (exact)"), None
            moved = frozen[frozen != 0]
            figures = (f"{m}: " + ", ".join(f"{s} {_fmt(v)}" for s, v in changes.items())
                       + f"; {len(frozen) - len(moved)} of {len(frozen)} frozen-backbone strategies exactly 0"
                       + (f" (not: {', '.join(f'{s} {_fmt(v)}' for s, v in moved.items())})" if len(moved) else ""))
        out.append(Verdict(c["id"], c["text"], c["source"], "held" if held else "not held", figures, significance,
                           decision, d.mdd if d is not None else math.nan))
    return out
