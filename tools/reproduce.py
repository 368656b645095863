"""Re-run some strategies of a committed run directory on this machine and say what reproduces exactly.

    python tools/reproduce.py reports/languages-seeds-quick --strategies zero_shot --seed 0

runs `run_suite.py run` with the committed run's scenario, profile, profile overrides (--set) and backbone for
the strategies (variants too: README "Variants and profile overrides") and seed given, into a fresh directory
(--out, default a temporary one), then compares it with the committed run cell by cell (same experience row,
same set): the sets must hold the same reference transcripts in the same order (else the data differ and
nothing is compared), then every hypothesis and every result figure is checked for equality. Utterance ids are
not compared (older runs named sets shared across scenarios after the scenario that first synthesised them). It
prints one line per strategy and exits 0 only if everything is identical, the strategies' configs included (the
fresh run takes today's defaults: a config that changed since, e.g. a tuned learning rate, is named key by key):
this is the check behind README "Reproducibility". Where something differs it also says where the fresh avg_error falls against the committed
report's 95% interval for that strategy.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from cl_asr.variants import render, split_top_level

REPO = Path(__file__).resolve().parent.parent


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def compare(committed: Path, fresh: Path, strategies: list[str], seed: int) -> bool:
    old_p = {(p["strategy"], p["trained_through"], p["eval_on"]): p for p in read_jsonl(committed / "predictions.jsonl")
             if p["seed"] == seed and p["strategy"] in strategies}
    new_p = {(p["strategy"], p["trained_through"], p["eval_on"]): p for p in read_jsonl(fresh / "predictions.jsonl")}
    old_r = {(r["strategy"], r["trained_through"], r["eval_on"], r["metric"]): r["value"]
             for r in read_jsonl(committed / "results.jsonl") if r["seed"] == seed and r["strategy"] in strategies}
    new_r = {(r["strategy"], r["trained_through"], r["eval_on"], r["metric"]): r["value"]
             for r in read_jsonl(fresh / "results.jsonl")}
    identical = True
    for name in strategies:
        cells = [k for k in old_p if k[0] == name]
        if not cells:
            print(f"{name} (seed {seed}): not in {committed}")
            identical = False
            continue
        hyps = same_hyps = figures = same_figures = 0
        for key in cells:
            if key not in new_p or new_p[key]["refs"] != old_p[key]["refs"]:
                print(f"{name} (seed {seed}): set {key[2]} after step {key[1]} holds other reference transcripts "
                      "here: the data differ, nothing compared")
                return False
            pairs = list(zip(old_p[key]["hyps"], new_p[key]["hyps"], strict=True))
            hyps += len(pairs)
            same_hyps += sum(a == b for a, b in pairs)
        for key, value in old_r.items():
            if key[0] == name:
                figures += 1
                same_figures += new_r.get(key) == value
        exact = same_hyps == hyps and same_figures == figures
        identical &= exact
        print(f"{name} (seed {seed}): {same_hyps} of {hyps} hypotheses and {same_figures} of {figures} result "
              f"figures identical{' (reproduced exactly)' if exact else ''}")
        if not exact:
            print("  " + within_interval(committed, fresh, name, seed))
    return identical


def within_interval(committed: Path, fresh: Path, name: str, seed: int) -> str:
    """Where the fresh avg_error falls against the committed report's 95% interval for the strategy."""
    import pandas as pd

    from cl_asr.report import write_report

    if not (fresh / "summary.csv").is_file():
        write_report(fresh)
    here = pd.read_csv(fresh / "summary.csv").set_index(["strategy", "seed"]).loc[(name, seed), "avg_error"]
    old = pd.read_csv(committed / "summary.csv").set_index(["strategy", "seed"]).loc[(name, seed), "avg_error"]
    iv = pd.read_csv(committed / "summary_intervals.csv").set_index(["strategy", "measure"]).loc[(name, "avg_error")]
    inside = iv.ci_low <= here <= iv.ci_high
    return (f"avg_error {here:.4f} here, {old:.4f} committed (seed {seed}); the committed 95% interval "
            f"({int(iv.n_seeds)} seed(s)) is [{iv.ci_low:.4f}, {iv.ci_high:.4f}]: "
            f"{'inside' if inside else 'OUTSIDE'} it")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a committed run directory (reports/...)")
    ap.add_argument("--strategies", required=True, help="comma-separated strategies to re-run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="where the fresh run goes (default: a temporary directory)")
    ap.add_argument("--compare-only", action="store_true", help="--out holds the fresh run already: only compare")
    args = ap.parse_args()
    meta = json.loads((args.run_dir / "run.json").read_text(encoding="utf-8"))
    cfg = meta["config"]
    strategies = split_top_level(args.strategies, "--strategies")  # variants (name[key=value,...]) included
    out = args.out or Path(tempfile.mkdtemp(prefix="cl_asr-reproduce-")) / "run"
    command = [sys.executable, str(REPO / "run_suite.py"), "run", "--scenario", cfg["scenario"], "--profile",
               cfg["profile"], "--backbone", cfg["backbone"], "--strategies", ",".join(strategies), "--seeds",
               str(args.seed), "--out", str(out), "--no-progress", "--no-report"]
    for key, value in (cfg.get("profile_overrides") or {}).items():  # the committed run's --set
        command += ["--set", f"{key}={render(value)}"]
    named = {n: {"strategy": v["strategy"], "config": v["overrides"]} for n, v in (cfg.get("variants") or {}).items()
             if n in strategies and "[" not in n}  # the committed run's --variants file, as far as asked for
    if named:
        out.parent.mkdir(parents=True, exist_ok=True)
        variants_file = out.parent / f"{out.name}-variants.yaml"
        variants_file.write_text(yaml.safe_dump(named, sort_keys=False), encoding="utf-8")
        command += ["--variants", str(variants_file)]
    if not args.compare_only:
        print("running:", " ".join(command[1:]), flush=True)
        if subprocess.run(command, cwd=REPO).returncode != 0:
            return 2
    same_configs = configs_match(cfg, json.loads((out / "run.json").read_text(encoding="utf-8"))["config"], strategies)
    return 0 if compare(args.run_dir, out, strategies, args.seed) and same_configs else 1


def configs_match(committed: dict, fresh: dict, strategies: list[str]) -> bool:
    """Whether each strategy ran with the config the committed run recorded: the fresh run takes today's
    defaults (baselines/, tuned/), which a later commit may have changed; a difference is named, key by key."""
    same = True
    for name in strategies:
        old, new = (committed.get("strategies") or {}).get(name), (fresh.get("strategies") or {}).get(name)
        if old is None or new is None or old == new:
            continue
        same = False
        keys = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
        print(f"{name}: config differs from the committed run's (today's defaults): " +
              "; ".join(f"{k}: committed {old.get(k)!r}, here {new.get(k)!r}" for k in keys))
    return same


if __name__ == "__main__":
    sys.exit(main())
