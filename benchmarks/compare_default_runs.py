"""Compare two runs of the default job (`python run_suite.py`) made on two commits: time and results.

    python benchmarks/compare_default_runs.py BEFORE_RUN_DIR AFTER_RUN_DIR --out reports/speed

Copies each run's run.json and summary.csv to OUT/default-before and OUT/default-after and writes
OUT/default_run.md: total and per-strategy times, the speed-up, and each strategy's final errors side by side
(same results within noise is part of the claim).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd


def load(run: Path) -> tuple[dict, pd.DataFrame]:
    return json.loads((run / "run.json").read_text()), pd.read_csv(run / "summary.csv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--wall-before", type=float, help="wall-clock seconds of the whole command (e.g. /usr/bin/time)")
    ap.add_argument("--wall-after", type=float)
    args = ap.parse_args()
    (mb, sb), (ma, sa) = load(args.before), load(args.after)
    for name, run in (("default-before", args.before), ("default-after", args.after)):
        dest = args.out / name
        dest.mkdir(parents=True, exist_ok=True)
        for f in ("run.json", "summary.csv"):
            shutil.copy2(run / f, dest / f)
    tb, ta = mb["timings"]["total_seconds_this_invocation"], ma["timings"]["total_seconds_this_invocation"]
    lines = [
        "# The default run before and after the speed work",
        "",
        f"Before: commit `{(mb.get('git') or {}).get('commit', '?')[:7]}`; after: commit "
        f"`{(ma.get('git') or {}).get('commit', '?')[:7]}`; same machine, same session, one after the other, "
        f"nothing else running. Device: {ma.get('device')}.",
        "",
        "| | before | after | speed-up |",
        "|---|---|---|---|",
    ]
    if args.wall_before and args.wall_after:
        lines.append(f"| wall clock of `python run_suite.py` (s) | {args.wall_before:.0f} | {args.wall_after:.0f} | "
                     f"{args.wall_before / args.wall_after:.2f}x |")
    lines.append(f"| run time recorded in run.json (s) | {tb:.0f} | {ta:.0f} | {tb / ta:.2f}x |")
    runs_b = {r["strategy"]: r for r in mb["strategy_runs"]}
    runs_a = {r["strategy"]: r for r in ma["strategy_runs"]}
    for name in runs_b:
        b, a = runs_b[name], runs_a.get(name)
        if a is None:
            continue
        total_b, total_a = b["train_seconds"] + b["eval_seconds"], a["train_seconds"] + a["eval_seconds"]
        lines.append(f"| {name}: train + eval (s) | {b['train_seconds']:.0f} + {b['eval_seconds']:.0f} | "
                     f"{a['train_seconds']:.0f} + {a['eval_seconds']:.0f} | {total_b / max(total_a, 1e-9):.2f}x |")
    lines += ["", "Results (final average error over the new languages, its base-language change, forgetting):", "",
              "| strategy | avg_error before | after | base_error_delta before | after | forgetting before | after | "
              "stored bytes after |", "|---|---|---|---|---|---|---|---|"]
    sb, sa = sb.set_index("strategy"), sa.set_index("strategy")
    for name in sb.index:
        if name not in sa.index:
            continue
        b, a = sb.loc[name], sa.loc[name]
        stored = a.get("stored_bytes")
        lines.append(f"| {name} | {b.avg_error:.3f} | {a.avg_error:.3f} | {b.base_error_delta:+.3f} | "
                     f"{a.base_error_delta:+.3f} | {b.forgetting:.3f} | {a.forgetting:.3f} | "
                     f"{'' if pd.isna(stored) else f'{stored / 2**20:.2f} MB'} |")
    (args.out / "default_run.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
