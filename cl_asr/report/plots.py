"""Seaborn figures of a run (PNG files under plots/)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are made on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .tables import row_label  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def matrix_heatmap(new: pd.DataFrame, base: pd.DataFrame, experiences: list[str], title: str, metric: str, path: Path):
    data = pd.concat([new, base.add_suffix(" (base)")], axis=1)
    data.index = [row_label(i, experiences) for i in data.index]
    fig, ax = plt.subplots(figsize=(1.1 * data.shape[1] + 2.5, 0.55 * data.shape[0] + 1.6))
    sns.heatmap(data, annot=True, fmt=".2f", cmap="rocket_r", vmin=0, vmax=max(1.0, float(data.max().max())),
                cbar_kws={"label": f"{metric.upper()} (lower is better)"}, ax=ax)
    if new.shape[1] and base.shape[1]:
        ax.axvline(new.shape[1], color="white", lw=3)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("")
    ax.set_title(title)
    return _save(fig, path)


def _grouped_bars(ax, data: pd.DataFrame, group: str, hue: str) -> None:
    """Bars of data.point grouped by `group`, one colour per `hue`, with 95% interval whiskers (low/high)."""
    groups, hues = list(dict.fromkeys(data[group])), list(dict.fromkeys(data[hue]))
    width = 0.8 / max(1, len(hues))
    colours = sns.color_palette(n_colors=max(1, len(hues)))
    for k, h in enumerate(hues):
        d = data[data[hue] == h].set_index(group).reindex(groups)
        x = np.arange(len(groups)) - 0.4 + width * (k + 0.5)
        err = np.vstack([(d.point - d.low).clip(lower=0), (d.high - d.point).clip(lower=0)]).astype(float)
        has_err = not np.isnan(err).all()
        ax.bar(x, d.point, width, label=h, color=colours[k],
               yerr=np.nan_to_num(err) if has_err else None, capsize=2, error_kw={"lw": 0.8})
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.legend(fontsize=8, ncols=1 + len(hues) // 6)


def final_error_bars(final: pd.DataFrame, metric: str, path: Path):
    """final: rows (system, set, point, low, high)."""
    n_sets = final.set.nunique()
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * n_sets + 2), 4))
    _grouped_bars(ax, final, "set", "system")
    ax.set_ylabel(f"final {metric.upper()} (lower is better)")
    ax.set_title("Error on every set after the last experience (whiskers: 95% interval)")
    return _save(fig, path)


def forgetting_bars(measures: pd.DataFrame, path: Path):
    """measures: rows (system, measure, point, low, high) for forgetting, bwt and base_error_delta."""
    fig, ax = plt.subplots(figsize=(max(7, 0.5 * measures.system.nunique() * 3), 4))
    _grouped_bars(ax, measures, "measure", "system")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_title("Forgetting (lower is better), BWT (higher is better),\nbase error change (lower is better); "
                 "whiskers: 95% interval")
    ax.title.set_fontsize(9)
    return _save(fig, path)


def _pareto_front(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Indices of points no other point beats on both axes (fewer parameters and lower error), by x."""
    order = np.lexsort((y, x))
    front, best = [], np.inf
    for i in order:
        if y[i] < best:
            front.append(int(i))
            best = y[i]
    return front


def error_vs_params(points: pd.DataFrame, metric: str, path: Path):
    """points: rows (system, point, low, high, trainable_params, stored_params_per_experience). Two panels:
    final average error against trainable and against stored parameters, the Pareto front drawn."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
    for ax, col, label in [(axes[0], "trainable_params", "trainable parameters per experience"),
                           (axes[1], "stored_params_per_experience", "stored parameters per experience")]:
        d = points.dropna(subset=[col]).reset_index(drop=True)
        x, y = d[col].to_numpy(float), d.point.to_numpy(float)
        err = np.vstack([(d.point - d.low).clip(lower=0), (d.high - d.point).clip(lower=0)]).astype(float)
        ax.errorbar(x, y, yerr=None if np.isnan(err).all() else np.nan_to_num(err), fmt="o", ms=7, capsize=3,
                    color="#4c72b0", ecolor="#999999")
        front = _pareto_front(x, y)
        ax.step(x[front], y[front], where="post", color="#dd8452", lw=1.2, label="Pareto front")
        for _, r in d.iterrows():
            ax.annotate(r["system"], (r[col], r["point"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
        # a strategy that trains nothing has 0: a symlog axis keeps 0 on it next to millions
        ax.set_xscale("symlog", linthresh=1e3)
        top = max(1e4, float(np.nanmax(x)) if len(x) else 1e4)
        ax.set_xlim(left=-300, right=top * 4)
        ax.set_xticks([0] + [10.0**k for k in range(3, int(np.ceil(np.log10(top))) + 1)])
        ax.set_xlabel(f"{label} (symlog; 0 = none)")
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_ylabel(f"final average {metric.upper()} on learned experiences")
    fig.suptitle("Error against parameters (lower left is better; whiskers: 95% interval)")
    return _save(fig, path)


def error_curves(cells: pd.DataFrame, experiences: list[str], metric: str, path: Path):
    """cells: rows (system, set, step, point, low, high). One panel per set: its error after each step of
    training, one line per system with its 95% band."""
    sets = list(dict.fromkeys(cells.set))
    cols = min(3, len(sets))
    rows = int(np.ceil(len(sets) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), sharex=True, squeeze=False)
    systems = list(dict.fromkeys(cells.system))
    colours = dict(zip(systems, sns.color_palette(n_colors=len(systems))))
    steps = list(range(-1, len(experiences)))
    for ax, name in zip(axes.flat, sets):
        d = cells[cells.set == name]
        for system, g in d.groupby("system", sort=False):
            g = g.sort_values("step")
            ax.plot(g.step, g.point, marker="o", ms=3, lw=1.2, color=colours[system], label=system)
            if g.low.notna().any():
                ax.fill_between(g.step, g.low, g.high, color=colours[system], alpha=0.12, lw=0)
        ax.set_title(name + ("" if name in experiences else " (base)"), fontsize=10)
        ax.set_xticks(steps, ["before"] + experiences, fontsize=8)
        ax.set_ylabel(metric.upper())
    for ax in list(axes.flat)[len(sets):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=min(6, len(labels)), fontsize=8)
    fig.suptitle(f"{metric.upper()} of every set after each experience (lower is better; bands: 95% interval)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pairwise_heatmap(diff: pd.DataFrame, significant: pd.DataFrame, measure: str, path: Path):
    """diff[a][b] = a - b of `measure`; cells whose difference is not significant are greyed and marked."""
    n = len(diff)
    fig, ax = plt.subplots(figsize=(1.0 * n + 3, 0.6 * n + 2))
    limit = float(np.nanmax(np.abs(diff.to_numpy()))) or 1.0
    labels = diff.map(lambda v: "" if pd.isna(v) else f"{v:+.3f}") + significant.map(lambda s: "" if s else "\nn.s.")
    sns.heatmap(diff, annot=labels, fmt="", cmap="vlag", vmin=-limit, vmax=limit, ax=ax,
                mask=diff.isna(), cbar_kws={"label": f"row − column, {measure}"}, annot_kws={"fontsize": 8})
    for i in range(n):
        for j in range(n):
            if i != j and not significant.iat[i, j]:
                ax.add_patch(plt.Rectangle((j, i), 1, 1, fill=True, color="#eeeeee", alpha=0.7, lw=0))
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title(f"Paired differences in {measure} (row − column)\nn.s. = 95% interval includes 0")
    ax.title.set_fontsize(9)
    return _save(fig, path)
