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

`--as-committed` re-runs each strategy with the config the committed run recorded instead of today's defaults:
a strategy whose config changed since runs as a variant (`NAME.committed`, in a variants file next to --out)
setting back each key that differs, and is compared with the committed strategy's rows under that name. A key
the strategy no longer has is an error naming it (that config cannot be run any more).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from cl_asr import orders
from cl_asr.variants import base_of, describe, file_component, render, split_top_level

REPO = Path(__file__).resolve().parent.parent


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def compare(committed: Path, fresh: Path, strategies: list[str], seed: int, renamed: dict | None = None) -> bool:
    """`renamed`: committed name -> the fresh run's name for it (--as-committed variants)."""
    back = {v: k for k, v in (renamed or {}).items()}  # the fresh run's rows under their committed names
    old_p = {(p["strategy"], p["trained_through"], p["eval_on"]): p for p in read_jsonl(committed / "predictions.jsonl")
             if p["seed"] == seed and p["strategy"] in strategies}
    new_p = {(back.get(p["strategy"], p["strategy"]), p["trained_through"], p["eval_on"]): p
             for p in read_jsonl(fresh / "predictions.jsonl")}
    old_r = {(r["strategy"], r["trained_through"], r["eval_on"], r["metric"]): r["value"]
             for r in read_jsonl(committed / "results.jsonl") if r["seed"] == seed and r["strategy"] in strategies}
    new_r = {(back.get(r["strategy"], r["strategy"]), r["trained_through"], r["eval_on"], r["metric"]): r["value"]
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
            print("  " + within_interval(committed, fresh, name, seed, (renamed or {}).get(name, name)))
    return identical


def within_interval(committed: Path, fresh: Path, name: str, seed: int, fresh_name: str | None = None) -> str:
    """Where the fresh avg_error falls against the committed report's 95% interval for the strategy."""
    import pandas as pd

    from cl_asr.report import write_report

    if not (fresh / "summary.csv").is_file():
        write_report(fresh)
    here = pd.read_csv(fresh / "summary.csv").set_index(["strategy", "seed"]).loc[(fresh_name or name, seed),
                                                                                  "avg_error"]
    old = pd.read_csv(committed / "summary.csv").set_index(["strategy", "seed"]).loc[(name, seed), "avg_error"]
    iv = pd.read_csv(committed / "summary_intervals.csv").set_index(["strategy", "measure"]).loc[(name, "avg_error")]
    inside = iv.ci_low <= here <= iv.ci_high
    return (f"avg_error {here:.4f} here, {old:.4f} committed (seed {seed}); the committed 95% interval "
            f"({int(iv.n_seeds)} seed(s)) is [{iv.ci_low:.4f}, {iv.ci_high:.4f}]: "
            f"{'inside' if inside else 'OUTSIDE'} it")


def today_configs(cfg: dict, strategies: list[str], named: dict) -> dict[str, dict]:
    """Each strategy's config as a fresh run of the committed run's scenario and profile would take it today."""
    from cl_asr.config import config_record
    from cl_asr.runner import RunRequest, check_request

    req = RunRequest(scenario=cfg["scenario"], strategies=strategies, profile=cfg["profile"],
                     out_dir=Path(tempfile.gettempdir()) / "cl_asr-reproduce-check",  # checked, never written
                     profile_overrides=dict(cfg.get("profile_overrides") or {}), variants=named)
    return {name: config_record(c) for name, c in check_request(req).configs.items()}


def as_committed(cfg: dict, strategies: list[str], named: dict) -> tuple[list[str], dict, dict]:
    """(the strategies to run, variants to add, committed name -> fresh name): a strategy whose config today
    differs from the committed record runs as the variant NAME.committed with the differing keys set back."""
    today = today_configs(cfg, strategies, named)
    bases = {name: base_of(orders.split(name)[0], named)[0] for name in strategies}
    base_today = today_configs(cfg, sorted(set(bases.values())), {})
    run, variants, renamed = [], {}, {}
    for name in strategies:
        old, new = (cfg.get("strategies") or {}).get(name), today[name]
        if old is None or old == new:
            run.append(name)
            continue
        gone = sorted(k for k in old if k not in today_fields(name, named))
        if gone:
            raise SystemExit(f"{name}: the committed config sets {', '.join(gone)}, which {name} no longer has: "
                             "it cannot be re-run as committed")
        entry, order = orders.split(name)
        variant = f"{file_component(entry)}.committed"
        # every committed value its base does not have today: the variant's own overrides and what changed since
        variants[variant] = {"strategy": bases[name],
                             "config": {k: v for k, v in old.items() if base_today[bases[name]].get(k) != v}}
        fresh = variant if order is None else f"{variant}{orders.SEPARATOR}{orders.STEP.join(order)}"
        run.append(fresh)
        renamed[name] = fresh
    return run, variants, renamed


def today_fields(name: str, named: dict) -> set[str]:
    """Every config field the strategy (or a variant's base) has today, recorded or not."""
    import dataclasses

    from cl_asr.methods import get_method

    return {f.name for f in dataclasses.fields(get_method(base_of(orders.split(name)[0], named)[0]).config_class)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a committed run directory (reports/...)")
    ap.add_argument("--strategies", required=True, help="comma-separated strategies to re-run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="where the fresh run goes (default: a temporary directory)")
    ap.add_argument("--compare-only", action="store_true", help="--out holds the fresh run already: only compare")
    ap.add_argument("--as-committed", action="store_true",
                    help="run each strategy with the config the committed run recorded, not today's defaults")
    args = ap.parse_args()
    meta = json.loads((args.run_dir / "run.json").read_text(encoding="utf-8"))
    cfg = meta["config"]
    strategies = split_top_level(args.strategies, "--strategies")  # variants (name[key=value,...]) included
    out = args.out or Path(tempfile.mkdtemp(prefix="cl_asr-reproduce-")) / "run"
    named = {n: {"strategy": v["strategy"], "config": v["overrides"]} for n, v in (cfg.get("variants") or {}).items()
             if orders.split(n)[0] in [orders.split(s)[0] for s in strategies] and "[" not in n}
    to_run, renamed = strategies, {}
    if args.as_committed:
        to_run, extra, renamed = as_committed(cfg, strategies, named)
        named = {**named, **extra}
        for old, fresh in renamed.items():
            print(f"{old}: runs as {fresh}, with its committed config ({describe(extra[orders.split(fresh)[0]]['config'])})")
    command = [sys.executable, str(REPO / "run_suite.py"), "run", "--scenario", cfg["scenario"], "--profile",
               cfg["profile"], "--backbone", cfg["backbone"], "--strategies", ",".join(to_run), "--seeds",
               str(args.seed), "--out", str(out), "--no-progress", "--no-report"]
    for key, value in (cfg.get("profile_overrides") or {}).items():  # the committed run's --set
        command += ["--set", f"{key}={render(value)}"]
    if named:  # the committed run's --variants file, as far as asked for, and the --as-committed variants
        out.parent.mkdir(parents=True, exist_ok=True)
        variants_file = out.parent / f"{out.name}-variants.yaml"
        variants_file.write_text(yaml.safe_dump(named, sort_keys=False), encoding="utf-8")
        command += ["--variants", str(variants_file)]
    if not args.compare_only:
        print("running:", " ".join(command[1:]), flush=True)
        if subprocess.run(command, cwd=REPO).returncode != 0:
            return 2
    fresh_config = json.loads((out / "run.json").read_text(encoding="utf-8"))["config"]
    fresh_config = {**fresh_config, "strategies": {old: fresh_config["strategies"].get(new) for old, new in
                                                   {**{s: s for s in strategies}, **renamed}.items()}}
    same_configs = configs_match(cfg, fresh_config, strategies)
    return 0 if compare(args.run_dir, out, strategies, args.seed, renamed) and same_configs else 1


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
