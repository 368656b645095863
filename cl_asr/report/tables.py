"""Tables derived from a run's results files only (no model needed): error matrices and the summary."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics.continual import clmasr_metrics, continual_metrics, joint_metrics

SUMMARY_COLUMNS = [
    "scenario", "strategy", "seed", "metric", "avg_error", "learned_error", "bwt", "forgetting", "fwt",
    "base_error", "base_error_delta", "intransigence", "clmasr_awer", "clmasr_bwt", "clmasr_im", "clmasr_fwt",
    "routing", "routing_accuracy", "trainable_params",
    "stored_params_per_experience", "stored_bytes", "train_seconds", "eval_seconds", "peak_memory_mb",
]


def error_matrix(rows: pd.DataFrame, names: list[str], n_exp: int) -> pd.DataFrame:
    """Rows: trained_through -1..n_exp-1; columns: `names` (sets); values: the metric."""
    m = rows.pivot_table(index="trained_through", columns="eval_on", values="value", aggfunc="first")
    m = m.reindex(index=range(-1, n_exp), columns=names)
    return m


def row_label(step: int, experiences: list[str]) -> str:
    return "before training" if step < 0 else f"after {experiences[step]}"


def experience_order(meta: dict, strategy: str) -> list[str]:
    """The experiences in the order `strategy` (a row name) learned them: its own with --orders (run.json
    config.orders, cl_asr/orders.py), else the scenario's."""
    return list(meta.get("config", {}).get("orders", {}).get(strategy, meta["experiences"]))


def matrices(meta: dict, results: pd.DataFrame, metric: str) -> dict[tuple[str, int], tuple[pd.DataFrame, pd.DataFrame]]:
    """(strategy, seed) -> (experience matrix, preservation matrix) for `metric`; the experience matrix's
    columns in the order the strategy learned them (row k: after its k-th experience)."""
    base = meta["preservation"]
    out = {}
    sel = results[results.metric == metric]
    for (strategy, seed), g in sel.groupby(["strategy", "seed"], sort=False):
        exps = experience_order(meta, strategy)
        out[(strategy, int(seed))] = (error_matrix(g, exps, len(exps)), error_matrix(g, base, len(exps)))
    return out


def joint_reference(strategy_runs: list[dict], done: set[str]) -> str | None:
    """The strategy a run's intransigence is measured against: the first in run.json whose record says
    `joint: true` and that has a complete result (a strategy in `done`), whatever it is called; None when the
    run has none. Only the recorded flag counts, never the name."""
    return next((r["strategy"] for r in strategy_runs
                 if r.get("joint") and not r.get("failure") and r["strategy"] in done), None)


def _complete(new: pd.DataFrame, base: pd.DataFrame, joint: bool) -> bool:
    rows = [0, len(new) - 1] if joint else slice(None)  # a joint model fills only the first and last rows
    return bool(new.iloc[rows].notna().all().all() and base.iloc[rows].notna().all().all())


def summary(meta: dict, results: pd.DataFrame) -> pd.DataFrame:
    metric = meta["metric"]
    runs = meta.get("strategy_runs", [])
    costs = {(s["strategy"], s["seed"]): s for s in runs}
    mats = matrices(meta, results, metric)
    done = {k for k, (new, base) in mats.items() if _complete(new, base, bool(costs.get(k, {}).get("joint")))}
    ref_name = joint_reference(runs, {s for s, _ in done})
    ref_final = {seed: mats[(s, seed)][0].iloc[-1] for s, seed in done if s == ref_name}  # by set name
    clmasr = _clmasr_by_run(meta, results, runs, done)
    records = []
    for (strategy, seed), (new, base) in mats.items():
        cost = costs.get((strategy, seed), {})
        b = base.to_numpy() if base.shape[1] else None
        if (strategy, seed) not in done:
            continue  # an unfinished strategy: summarised once its matrix is complete
        if cost.get("joint"):
            cm = joint_metrics(new.to_numpy(), b)
        else:  # the joint reference of the same seed where there is one, else its first seed (as stats.py)
            ref = ref_final.get(seed, ref_final[min(ref_final)] if ref_final else None)
            # the joint model's final error on each set, in the order this strategy learned them (--orders)
            cm = continual_metrics(new.to_numpy(), b, None if ref is None else ref.reindex(new.columns).to_numpy())
        sel = results[(results.strategy == strategy) & (results.seed == seed) & (results.metric == metric)
                      & (results.stream == "test") & (results.trained_through == results.trained_through.max())]
        routing = cost.get("eval_routing")
        records.append({
            "scenario": meta["config"]["scenario"], "strategy": strategy, "seed": seed, "metric": metric,
            **cm.as_dict(),
            **clmasr.get((strategy, seed), {}),
            "base_error": float(np.mean(base.to_numpy()[-1])) if base.shape[1] else float("nan"),
            "routing": routing or "",
            # share of final-row test utterances sent to their own experience's parameters
            "routing_accuracy": float(sel["routing_accuracy"].mean()) if routing and "routing_accuracy" in sel
            else float("nan"),
            "trainable_params": cost.get("trainable_params"),
            "stored_params_per_experience": cost.get("stored_params_per_experience"),
            "stored_bytes": cost.get("stored_bytes"),  # largest checkpoint after an experience (older runs: none)
            "train_seconds": cost.get("train_seconds"),
            "eval_seconds": cost.get("eval_seconds"),
            "peak_memory_mb": cost.get("peak_memory_mb"),
        })
    table = pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)
    return _add_other_final_means(table, meta, results)


def _clmasr_by_run(meta: dict, results: pd.DataFrame, runs: list[dict], done: set) -> dict:
    """(strategy, seed) -> CL-MASR's measures on WER (metrics/continual.py clmasr_metrics), where every cell of
    the strategy's WER matrix exists; IM against the run's joint reference, FWT against its single-task one
    (run.json `joint` / `single_task`), each of the same seed where there is one, else its first seed."""
    if not len(results) or "wer" not in set(results.metric):
        return {}
    wer = matrices(meta, results, "wer")
    by_flag = {}
    for flag in ("joint", "single_task"):
        ref = next((r["strategy"] for r in runs if r.get(flag) and not r.get("failure")
                    and any(s == r["strategy"] for s, _ in done)), None)
        by_flag[flag] = {seed: m for (s, seed), (m, _) in wer.items() if s == ref} if ref else {}

    def of(flag, seed):
        refs = by_flag[flag]
        return refs.get(seed, refs[min(refs)]) if refs else None

    out = {}
    for (strategy, seed), (new, _) in wer.items():
        cost = next((r for r in runs if (r["strategy"], r["seed"]) == (strategy, seed)), {})
        if (strategy, seed) in done and cost.get("joint") and new.iloc[-1].notna().all():
            out[(strategy, seed)] = {"clmasr_awer": float(new.to_numpy()[-1].mean())}  # first and last rows only
            continue
        if (strategy, seed) not in done or new.isna().any().any():
            continue
        joint, single = of("joint", seed), of("single_task", seed)
        order = list(new.columns)
        out[(strategy, seed)] = clmasr_metrics(
            new.to_numpy(),
            None if joint is None else joint.iloc[-1].reindex(order).to_numpy(),
            None if single is None or single.isna().any().any()
            else pd.Series(np.diagonal(single.to_numpy()[1:]), index=single.columns).reindex(order).to_numpy())
    return out


def _add_other_final_means(table: pd.DataFrame, meta: dict, results: pd.DataFrame) -> pd.DataFrame:
    """avg_<m>: final-row mean over the experiences' test sets of every other metric scored on all of them
    (e.g. avg_eer, the entity error rate, on text_domains), so claims and readers can use it too."""
    n_exp = len(meta["experiences"])
    last = results[(results.trained_through == n_exp - 1) & (results.stream == "test")]
    for m in dict.fromkeys(last.metric):
        if m == meta["metric"] or last[last.metric == m].eval_on.nunique() < n_exp:
            continue
        means = last[last.metric == m].groupby(["strategy", "seed"]).value.mean()
        col = f"avg_{m}"
        pos = table.columns.get_loc("avg_error") + 1
        table.insert(pos, col, [means.get((r.strategy, r.seed), float("nan")) for r in table.itertuples()])
    return table


def final_errors(meta: dict, results: pd.DataFrame) -> pd.DataFrame:
    """Final-row error on every set: index strategy (seed-averaged), columns the sets."""
    metric, n_exp = meta["metric"], len(meta["experiences"])
    sel = results[(results.metric == metric) & (results.trained_through == n_exp - 1)]
    table = sel.pivot_table(index="strategy", columns="eval_on", values="value", aggfunc="mean")
    return table.reindex(columns=meta["experiences"] + meta["preservation"])
