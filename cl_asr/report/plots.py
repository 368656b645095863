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


def final_error_bars(final: pd.DataFrame, metric: str, path: Path):
    long = final.reset_index().melt(id_vars="strategy", var_name="set", value_name=metric)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * final.shape[1] + 2), 4))
    sns.barplot(long, x="set", y=metric, hue="strategy", ax=ax)
    ax.set_ylabel(f"final {metric.upper()} (lower is better)")
    ax.set_title("Error on every set after the last experience")
    return _save(fig, path)


def forgetting_bars(summary: pd.DataFrame, path: Path):
    long = summary.melt(id_vars="strategy", value_vars=["forgetting", "bwt", "base_error_delta"],
                        var_name="measure", value_name="value")
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.barplot(long, x="measure", y="value", hue="strategy", ax=ax)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_title("Forgetting (lower is better), BWT (higher is better), base error change (lower is better)")
    ax.title.set_fontsize(9)
    return _save(fig, path)


def error_vs_params(summary: pd.DataFrame, metric: str, path: Path):
    df = summary.groupby("strategy", as_index=False)[["avg_error", "trainable_params"]].mean()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.scatterplot(df, x="trainable_params", y="avg_error", hue="strategy", s=90, ax=ax, legend=False)
    for _, r in df.iterrows():
        ax.annotate(r["strategy"], (r["trainable_params"], r["avg_error"]), textcoords="offset points", xytext=(6, 4))
    # zero_shot trains nothing: a symlog axis keeps 0 on it next to millions
    ax.set_xscale("symlog", linthresh=1e3)
    top = max(1e4, float(df["trainable_params"].max()))
    ax.set_xlim(left=-300, right=top * 4)
    ax.set_xticks([0] + [10.0**k for k in range(3, int(np.ceil(np.log10(top))) + 1)])
    ax.set_xlabel("trainable parameters per experience (symlog; 0 = none)")
    ax.set_ylabel(f"final average {metric.upper()} on learned experiences")
    ax.set_title("Error against trainable parameters (lower left is better)")
    return _save(fig, path)
