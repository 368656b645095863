"""Uncertainty for every figure of a report, from per-utterance counts alone (predictions.jsonl).

One bootstrap replicate draws, for every test set, its utterances with replacement (the same draw for every
strategy and every run, so differences are *paired*), and, for every strategy with several seeds, its seeds
with replacement (training randomness). Every error rate is re-pooled from the drawn utterances (sum of edits /
sum of reference tokens), every error matrix and every continual-learning measure recomputed from those, and a
strategy's figure is the mean over its drawn seeds. Replicate 0 is the observed data (all weights one), so the
point estimates equal the summary table's means over seeds.

- 95% interval: 2.5th and 97.5th percentiles of the replicates.
- Paired comparison of A and B: the replicates of A - B; significant at 5% when the interval excludes 0;
  p = twice the smaller share of replicates on either side of 0.
- Minimum detectable difference of a comparison (MDD, docs/metrics.md): (z_0.975 + z_0.80) x SE = 2.80 x SE,
  SE = the standard deviation of the bootstrap replicates of A - B (replicate 0, the observed data, left out):
  under a normal approximation, the smallest true difference this test-set size (and these seeds) finds
  significant at 5% two-sided with 80% power. A property of the design, not of the observed difference.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from ..metrics.continual import continual_metrics_batch, joint_metrics_batch

N_REPLICATES = 2000
# MDD = MDD_FACTOR x SE: z of a 5% two-sided test plus z of 80% power (1.960 + 0.842 = 2.802)
ALPHA, POWER = 0.05, 0.80
MDD_FACTOR = NormalDist().inv_cdf(1 - ALPHA / 2) + NormalDist().inv_cdf(POWER)
# The difference in final average error a comparison should resolve (the `standard` profile is sized for it,
# tools/size_test_sets.py): the report says whether each claim's interval is narrower than +-RESOLUTION.
RESOLUTION = 0.03
MEASURES = ("avg_error", "learned_error", "bwt", "forgetting", "fwt", "base_error", "base_error_delta",
            "intransigence")


class DifferentTestSets(ValueError):
    """Two systems were evaluated on different utterances (or references) of a set: they cannot be compared."""


# A prediction row's key for the content checksum of the set it was evaluated on: run.json's content_checksums
# ('stream/set' -> a hash of every row of the set but its id), added to each row by cl_asr/report/load.py.
SET_CONTENT = "set_content"


def how_sets_differ(a: dict, b: dict) -> str | None:
    """None when prediction rows `a` and `b` (of one run or two) were evaluated on the same test set; otherwise
    what differs. With both rows' content checksums, the set is its content (audio, transcripts, every other
    column), whatever its ids: the same audio is the same set, named by whichever scenario asked for it. Without
    them (runs made before they were recorded) it is the utterance ids; the reference transcripts, always."""
    content_a, content_b = a.get(SET_CONTENT), b.get(SET_CONTENT)
    if not (content_a and content_b) and tuple(a["ids"]) != tuple(b["ids"]):
        return "utterances"
    if tuple(a["refs"]) != tuple(b["refs"]):
        return "reference transcripts"
    if content_a and content_b and (content_a != content_b or len(a["ids"]) != len(b["ids"])):
        return "audio or other content"  # the same transcripts, but the sets' content checksums differ
    return None


class NoUtteranceCounts(ValueError):
    """The predictions have no per-utterance counts (runs made before they were recorded)."""


@dataclass(frozen=True)
class Estimate:
    point: float  # mean over seeds of the observed figure
    std: float  # standard deviation over seeds (NaN with one seed)
    low: float  # 95% bootstrap interval
    high: float
    n_seeds: int

    def text(self, digits: int = 3, signed: bool = False) -> str:
        if np.isnan(self.point):
            return "–"
        f = f"{{:{'+' if signed else ''}.{digits}f}}"
        out = f.format(self.point)
        if self.n_seeds > 1 and not np.isnan(self.std):
            out += f" ± {self.std:.{digits}f}"
        if not np.isnan(self.low):
            out += f" [{f.format(self.low)}, {f.format(self.high)}]"
        return out


@dataclass(frozen=True)
class Difference:
    a: str
    b: str
    measure: str
    point: float  # a - b, observed
    low: float
    high: float
    p: float
    se: float = float("nan")  # standard deviation of the bootstrap replicates of a - b

    @property
    def significant(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    @property
    def mdd(self) -> float:
        """Minimum detectable difference: MDD_FACTOR x se, the smallest true difference this test would find
        significant (5%, two-sided) with 80% power. NaN without replicates."""
        return MDD_FACTOR * self.se

    @property
    def half_width(self) -> float:
        """Half the 95% interval's width, (high - low) / 2 (the interval need not be symmetric about the point)."""
        return (self.high - self.low) / 2

    def narrower_than(self, resolution: float = RESOLUTION) -> bool:
        """Whether the 95% interval is narrower than +-resolution (half-width below it)."""
        return bool(self.half_width < resolution)

    def mdd_text(self, digits: int = 3) -> str:
        return "–" if np.isnan(self.mdd) else f"{self.mdd:.{digits}f}"

    def text(self, digits: int = 3) -> str:
        mark = "" if self.significant else " (n.s.)"
        return f"{self.point:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]{mark}"


class _SetCounts:
    """One test set's per-utterance counts for one metric: a row per evaluation cell."""

    def __init__(self, name: str, row: dict):
        # The first prediction row of the set: every other must be on the same set (how_sets_differ); ids
        # and refs are that row's (runs with content checksums may name the same utterances differently).
        self.name, self.row, self.first = name, row, row["system"]
        self.ids, self.refs = tuple(row["ids"]), tuple(row["refs"])
        self.keys: list[tuple] = []
        self.edits: list[list[int]] = []
        self.tokens: list[list[int]] = []


class Bootstrap:
    """Replicates of every cell, matrix and measure of a set of systems (strategies, or run/strategy pairs).

    predictions: prediction rows (predictions.jsonl) with a `system` key added; all systems must share the
    scenario's sets. experiences / preservation: set names in order. joint_for: system -> the joint-training
    system its intransigence is measured against (or absent)."""

    def __init__(self, predictions: list[dict], metric: str, experiences: list[str], preservation: list[str],
                 joint_systems: set[str] = frozenset(), joint_for: dict[str, str] | None = None,
                 other_metrics: tuple[str, ...] = (), n_replicates: int = N_REPLICATES, seed: int = 0,
                 orders: dict[str, list[str]] | None = None):
        self.metric, self.experiences, self.preservation = metric, list(experiences), list(preservation)
        self.orders = dict(orders or {})  # system -> its experience order, where not `experiences` (--orders)
        self.joint_systems, self.joint_for = set(joint_systems), dict(joint_for or {})
        self.n = n_replicates
        rng = np.random.default_rng(seed)
        by_set = {m: self._collect(predictions, m) for m in (metric, *other_metrics)}
        # The same utterance draw for a set whatever the metric, system or run: paired comparisons.
        self.weights = {}
        for name, sc in sorted(by_set[metric].items()):
            n_utts = len(sc.ids)
            draws = rng.multinomial(n_utts, np.full(n_utts, 1 / n_utts), size=self.n)
            self.weights[name] = np.vstack([np.ones((1, n_utts)), draws])  # [1 + n, n_utts]
        self.rates = {m: self._rates(sets) for m, sets in by_set.items()}  # metric -> key -> [1 + n]
        seeds: dict[str, set] = {}
        for system, seed, *_ in self.rates[metric]:
            seeds.setdefault(system, set()).add(seed)
        self.seeds = {s: sorted(v) for s, v in seeds.items()}
        self.seed_draws = {s: rng.integers(0, len(v), size=(self.n, len(v))) for s, v in sorted(self.seeds.items())}
        self.other_metrics = tuple(m for m in other_metrics if self._scored_on_experiences(m))
        self._measures = {(s, seed): self._measures_of(s, seed) for s, v in self.seeds.items() for seed in v}
        self._cache: dict[tuple, np.ndarray] = {}

    # -- per-utterance counts -> replicate rates -------------------------------------------------------
    def _collect(self, predictions: list[dict], metric: str) -> dict[str, _SetCounts]:
        sets: dict[str, _SetCounts] = {}
        for p in predictions:
            if "edits" not in p:
                raise NoUtteranceCounts(
                    "predictions.jsonl has no per-utterance counts (a run made before they were recorded): "
                    "re-run it to get intervals and significance")
            if metric not in p["edits"]:
                continue
            name = p["eval_on"]
            if name not in sets:
                sets[name] = _SetCounts(name, p)
            sc = sets[name]
            what = how_sets_differ(sc.row, p)
            if what:
                raise DifferentTestSets(
                    f"test set {name!r}: {p['system']} was evaluated on different {what} than {sc.first} "
                    f"({len(p['ids'])} vs {len(sc.ids)} utterances): their figures cannot be compared")
            sc.keys.append((p["system"], p["seed"], p["trained_through"], name))
            sc.edits.append(p["edits"][metric])
            sc.tokens.append(p["ref_tokens"][metric])
        return sets

    def _rates(self, sets: dict[str, _SetCounts]) -> dict[tuple, np.ndarray]:
        out = {}
        for name, sc in sets.items():
            w = self.weights[name]
            edits = np.asarray(sc.edits, dtype=float) @ w.T  # [cells, 1 + n]
            tokens = np.asarray(sc.tokens, dtype=float) @ w.T
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = np.where(tokens > 0, edits / np.where(tokens > 0, tokens, 1), np.nan)
            out.update(zip(sc.keys, rate))
        return out

    def _scored_on_experiences(self, metric: str) -> bool:
        names = {k[3] for k in self.rates.get(metric, {})}
        return all(e in names for e in self.experiences)

    def _matrix(self, metric: str, system: str, seed: int, names: list[str]) -> np.ndarray:
        """[1 + n, T + 1, len(names)]: the error matrix of `names` in every replicate (NaN where not evaluated)."""
        nan = np.full(self.n + 1, np.nan)
        rows = len(self.experiences) + 1
        if not names:
            return np.empty((self.n + 1, rows, 0))
        cells = [[self.rates[metric].get((system, seed, step, name), nan) for name in names]
                 for step in range(-1, len(self.experiences))]
        return np.asarray(cells, dtype=float).transpose(2, 0, 1)

    def order_of(self, system: str) -> list[str]:
        """The experiences in the order `system` learned them: its matrix's columns, its rows' steps."""
        return list(self.orders.get(system, self.experiences))

    def _measures_of(self, system: str, seed: int) -> dict[str, np.ndarray]:
        new = self._matrix(self.metric, system, seed, self.order_of(system))
        base = self._matrix(self.metric, system, seed, self.preservation)
        if system in self.joint_systems:
            out = joint_metrics_batch(new, base)
        else:
            joint = self.joint_for.get(system)
            final = None
            if joint in self.seeds:
                ref_seed = seed if seed in self.seeds[joint] else self.seeds[joint][0]
                final = self._matrix(self.metric, joint, ref_seed, self.order_of(system))[:, -1, :]
            out = continual_metrics_batch(new, base, final)
        out["base_error"] = base[:, -1, :].mean(-1) if base.shape[-1] else np.full(self.n + 1, np.nan)
        for m in self.other_metrics:
            out[f"avg_{m}"] = self._matrix(m, system, seed, self.experiences)[:, -1, :].mean(-1)
        return out

    # -- seeds -> a system's replicates ---------------------------------------------------------------
    def _over_seeds(self, system: str, per_seed: list[np.ndarray]) -> np.ndarray:
        stacked = np.stack(per_seed)  # [seeds, 1 + n]
        draws = self.seed_draws[system]  # [n, seeds]
        resampled = stacked[draws, np.arange(1, self.n + 1)[:, None]].mean(1)
        return np.concatenate([[stacked[:, 0].mean()], resampled])

    def replicates(self, system: str, measure: str) -> np.ndarray:
        key = ("measure", system, measure)  # the report asks for the same figures many times
        if key not in self._cache:
            self._cache[key] = self._over_seeds(
                system, [self._measures[(system, s)][measure] for s in self.seeds[system]])
        return self._cache[key]

    def per_seed_replicates(self, system: str, measure: str) -> np.ndarray:
        """[seeds, 1 + n]: each seed's measure over the utterance draws alone (no seed draw; column 0 observed),
        for separating what more utterances and what more seeds would shrink (tools/size_test_sets.py)."""
        return np.stack([self._measures[(system, s)][measure] for s in self.seeds[system]])

    def cell_replicates(self, system: str, step: int, name: str, metric: str | None = None) -> np.ndarray:
        key = ("cell", system, step, name, metric or self.metric)
        if key not in self._cache:
            nan = np.full(self.n + 1, np.nan)
            rates = self.rates[metric or self.metric]
            self._cache[key] = self._over_seeds(
                system, [rates.get((system, s, step, name), nan) for s in self.seeds[system]])
        return self._cache[key]

    @staticmethod
    def _estimate(reps: np.ndarray, per_seed: list[float]) -> Estimate:
        rest = reps[1:][~np.isnan(reps[1:])]
        low, high = (np.percentile(rest, [2.5, 97.5]) if len(rest) else (np.nan, np.nan))
        std = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan")
        return Estimate(float(reps[0]), std, float(low), float(high), len(per_seed))

    def estimate(self, system: str, measure: str) -> Estimate:
        per_seed = [float(self._measures[(system, s)][measure][0]) for s in self.seeds[system]]
        return self._estimate(self.replicates(system, measure), per_seed)

    def common_seeds(self, systems: list[str]) -> list[int]:
        """The seeds every one of `systems` ran (an order study compares orders on the same seeds)."""
        return sorted(set.intersection(*(set(self.seeds[s]) for s in systems)))

    def order_points(self, systems: list[str], measure: str) -> list[np.ndarray]:
        """Per row (one per stream order), the measure's replicates averaged over the seeds all rows ran."""
        seeds = self.common_seeds(systems)
        return [np.mean([self._measures[(s, seed)][measure] for seed in seeds], axis=0) for s in systems]

    def over_orders(self, systems: list[str], measure: str) -> Estimate:
        """A measure averaged over the rows of one strategy in several stream orders (--orders), on the seeds
        they all ran: the point is the mean over orders, `std` the standard deviation over orders (their
        spread), the interval that of the mean over orders under the same utterance draws for every order."""
        per_order = self.order_points(systems, measure)
        return self._estimate(np.mean(per_order, axis=0), [float(p[0]) for p in per_order])

    def cell(self, system: str, step: int, name: str, metric: str | None = None) -> Estimate:
        rates = self.rates[metric or self.metric]
        per_seed = [float(rates[(system, s, step, name)][0]) for s in self.seeds[system]
                    if (system, s, step, name) in rates]
        return self._estimate(self.cell_replicates(system, step, name, metric), per_seed)

    def compare(self, a: str, b: str, measure: str) -> Difference:
        d = self.replicates(a, measure) - self.replicates(b, measure)
        rest = d[1:][~np.isnan(d[1:])]
        if not len(rest):
            return Difference(a, b, measure, float(d[0]), np.nan, np.nan, np.nan)
        low, high = np.percentile(rest, [2.5, 97.5])
        p = min(1.0, 2 * min(np.mean(rest <= 0), np.mean(rest >= 0)))
        se = float(np.std(rest, ddof=1)) if len(rest) > 1 else np.nan
        return Difference(a, b, measure, float(d[0]), float(low), float(high), float(p), se)

    @property
    def systems(self) -> list[str]:
        return list(self.seeds)

    def measures(self) -> list[str]:
        return [*MEASURES, *(f"avg_{m}" for m in self.other_metrics)]


class PointEstimates:
    """What a report can say without per-utterance counts (runs made before they were recorded): means and
    standard deviations over seeds from the results files, no intervals and no paired tests."""

    def __init__(self, table, results, metric: str):
        self.table, self.results, self.metric = table, results, metric
        self.seeds = {s: sorted(g.seed.unique()) for s, g in table.groupby("system", sort=False)}

    @property
    def systems(self) -> list[str]:
        return list(self.seeds)

    def measures(self) -> list[str]:
        return [*MEASURES, *(c for c in self.table.columns if c.startswith("avg_") and c != "avg_error")]

    @staticmethod
    def _estimate(values) -> Estimate:
        v = [float(x) for x in values]
        if not v:
            return Estimate(np.nan, np.nan, np.nan, np.nan, 0)
        return Estimate(float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else np.nan, np.nan, np.nan, len(v))

    def estimate(self, system: str, measure: str) -> Estimate:
        if measure not in self.table.columns:
            return self._estimate([])
        return self._estimate(self.table.loc[self.table.system == system, measure])

    def cell(self, system: str, step: int, name: str, metric: str | None = None) -> Estimate:
        r = self.results
        sel = r[(r.system == system) & (r.trained_through == step) & (r.eval_on == name)
                & (r.metric == (metric or self.metric))]
        return self._estimate(sel.value)

    def compare(self, a: str, b: str, measure: str) -> None:
        return None
