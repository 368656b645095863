"""How many test utterances per set (and seeds) a `languages` run needs for the report's paired differences in
final average error to resolve a given difference (MDD <= --target, default 0.03): sized from a committed run's
per-utterance predictions.

    python tools/size_test_sets.py [RUN_DIR] [--target 0.03] [--sizes 12,40,100,140] [--seeds 3,5,10]

The report's minimum detectable difference of A - B is MDD = 2.80 x SE, SE = the standard deviation of the
bootstrap replicates of A - B (cl_asr/report/stats.py; docs/metrics.md). Those replicates redraw utterances and
seeds, so SE^2 has a part that shrinks with more test utterances and a part that only more seeds shrink. From
the bootstrap of RUN_DIR (n0 utterances per set, k0 seeds), for each strategy X with k0 seeds (x_s: seed s's
replicates over utterance draws alone, x̄ their mean over seeds):
  I_X   = (sum_s var(x_s) - k0 var(x̄)) / (k0 - 1)   the seed x utterance interaction: how differently X's seeds
                                                   fail on different utterances (a sampling effect, ~ 1/n)
  tau_X = max(var_s(x_s observed) - I_X, 0)        the spread of X's seeds' true error (training randomness;
                                                   does not shrink with n); var_s is the sample variance
  U     = var(x̄_A - x̄_B)                           the utterance part of the pair (shared draws), ~ 1/n
and the report's bootstrap SE at n utterances per set and k seeds is modelled as
  SE^2(n, k) = [U + (I_A + I_B)(1/k - 1/k0) + 2 (k-1)/k^2 (I_A + I_B)] n0/n + (k-1)/k^2 (tau_A + tau_B)
(the seed draw adds (k-1)/k^2 of the seeds' sample variance, which holds tau plus once more the interaction).
At (n0, k0) the model reproduces the bootstrap's own SE (printed: `model`). The needed n solves
2.80 SE(n, k) = target; where the seed part alone exceeds it, no test-set size is enough with k seeds.

Caveats, printed too: tau comes from k0 seeds (3: a variance on 2 degrees of freedom, uncertain by a factor of
several); a profile with more training data trains other models (its seeds may spread less); the new test
sentences are assumed as variable as the n0 measured (the `standard` profile's first 12 per set are these 12).
Utterances are independent units: each test sentence is spoken once (voices alternate), so the bootstrap's
unit, an utterance, is a sentence.

With --profile NAME it also estimates that `languages` profile's wall-clock on the machine of the --timings runs
(committed run.json files: 2-core CPU): per strategy, training seconds per utterance-step (train_seconds /
(n_train x epochs x experiences)) and decoding seconds per utterance (eval_seconds / (decodes computed x
n_test)), the fastest seed of any timing run (the least contended: those runs shared their cores part of the
time), scaled by the profile's n_train x epochs and n_test; zero_shot decodes once per run (its other seeds
reuse it), every other strategy once per seed. An estimate, not a measurement.
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cl_asr.report.load import load_run  # noqa: E402
from cl_asr.report.stats import MDD_FACTOR, Bootstrap  # noqa: E402

# Pairs whose MDD the profile is sized for: the trained strategies whose seeds behave (spt4asr is left out: one
# of its three seeds diverged, seed SD 0.128; zero_shot: every method beats it by 0.1 or more).
TYPICAL = ("lora", "fft", "lapt", "spt_entire", "spt_decoder")


def components(b: Bootstrap, system: str, measure: str) -> dict:
    x = b.per_seed_replicates(system, measure)  # [k0, 1 + replicates]: utterance draws alone
    k0 = len(x)
    mean = x.mean(0)
    if k0 < 2:
        return {"k0": k0, "mean": mean, "I": 0.0, "tau": 0.0}
    interaction = (x[:, 1:].var(1, ddof=1).sum() - k0 * mean[1:].var(ddof=1)) / (k0 - 1)
    observed = x[:, 0].var(ddof=1)
    return {"k0": k0, "mean": mean, "I": max(float(interaction), 0.0), "tau": max(float(observed - interaction), 0.0)}


def model(pair: dict, n: int, k: int) -> tuple[float, float]:
    """(SE at n utterances per set and k seeds, its part that no n removes)."""
    n0, k0, u, i, tau = pair["n0"], pair["k0"], pair["U"], pair["I"], pair["tau"]
    f = (k - 1) / k**2
    scaled = max(u + i * (1 / k - 1 / k0), 0.0) + 2 * f * i
    return math.sqrt(scaled * n0 / n + f * tau), math.sqrt(f * tau)


def needed(pair: dict, k: int, target: float) -> float:
    se_target = target / MDD_FACTOR
    n0, k0, u, i, tau = pair["n0"], pair["k0"], pair["U"], pair["I"], pair["tau"]
    f = (k - 1) / k**2
    room = se_target**2 - f * tau
    if room <= 0:
        return math.inf
    return n0 * (max(u + i * (1 / k - 1 / k0), 0.0) + 2 * f * i) / room


def rates(timing_dirs: list[str]) -> dict[str, dict]:
    """strategy -> the fastest (training s per utterance-step, decoding s per utterance) in the timing runs."""
    out: dict[str, dict] = {}
    for d in timing_dirs:
        meta = load_run(Path(d)).meta
        prof, n_exp = meta["config"]["profile_config"], len(meta["experiences"])
        n_test = meta["scenario_settings"]["utterances"]["test_per_set"]
        for r in meta["strategy_runs"]:
            if r.get("failure"):
                continue
            steps = prof["n_train"] * prof["epochs"] * n_exp
            decoded = r["decodes"]["computed"] * n_test
            cur = out.setdefault(r["strategy"], {"train": math.inf, "eval": math.inf,
                                                 "decodes": r["decodes"]["computed"]})
            if r["train_seconds"]:
                cur["train"] = min(cur["train"], r["train_seconds"] / steps)
            if decoded:
                cur["eval"] = min(cur["eval"], r["eval_seconds"] / decoded)
                cur["decodes"] = r["decodes"]["computed"]
    return out


def wall_clock(profile_name: str, timing_dirs: list[str], seed_counts: list[int]) -> None:
    from cl_asr.config import load_yaml

    yaml = load_yaml(ROOT / "scenarios" / "languages.yaml")
    prof = yaml["profiles"][profile_name]
    n_exp = len(yaml["experiences"])
    r = rates(timing_dirs)
    print(f"\nwall-clock estimate, profile {profile_name} (n_train {prof['n_train']}, epochs {prof['epochs']}, "
          f"n_test {prof['n_test']}, window {prof['encoder_window_seconds']} s), from {', '.join(timing_dirs)}:")
    print(f"{'strategy':12s} {'train s/step':>12s} {'decode s/utt':>12s} {'decodes':>7s} {'train s':>8s} "
          f"{'eval s':>7s} {'per seed':>9s}")
    per_seed = {}
    for name, x in sorted(r.items(), key=lambda kv: kv[0]):
        train = 0.0 if not math.isfinite(x["train"]) else x["train"] * prof["n_train"] * prof["epochs"] * n_exp
        decode = x["eval"] if math.isfinite(x["eval"]) else 0.0
        ev = decode * x["decodes"] * prof["n_test"]
        per_seed[name] = (train, ev)
        print(f"{name:12s} {x['train'] if math.isfinite(x['train']) else 0:12.3f} {decode:12.3f} {x['decodes']:7d} "
              f"{train:8.0f} {ev:7.0f} {train + ev:9.0f}")
    for group, names in (("default run (zero_shot, fft, spt_decoder, spt_entire)",
                          ["zero_shot", "fft", "spt_decoder", "spt_entire"]),
                         ("the three-seed study's 7 strategies (+ lapt, lora, spt4asr)",
                          ["zero_shot", "fft", "spt_decoder", "spt_entire", "lapt", "lora", "spt4asr"])):
        names = [n for n in names if n in per_seed]
        for k in seed_counts:
            total = sum(sum(per_seed[n]) * (1 if n == "zero_shot" else k) for n in names)
            print(f"  {group}, {k} seed(s): {total / 3600:.1f} h")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", nargs="?", default=str(ROOT / "reports" / "languages-seeds-quick"))
    ap.add_argument("--measure", default="avg_error")
    ap.add_argument("--target", type=float, default=0.03, help="the MDD to reach (default 0.03)")
    ap.add_argument("--sizes", default="12,40,100,140", help="test utterances per set to show the MDD at")
    ap.add_argument("--seeds", default="3,5,10", help="seed counts to show")
    ap.add_argument("--profile", help="also estimate this languages profile's wall-clock from --timings")
    ap.add_argument("--timings", default=",".join(str(ROOT / "reports" / d)
                                                  for d in ("languages-seeds-quick", "languages-all-quick")),
                    help="run directories whose run.json timings the estimate scales")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    seed_counts = [int(x) for x in args.seeds.split(",")]

    run = load_run(Path(args.run_dir))
    meta = run.meta
    b = Bootstrap([{**p, "system": p["strategy"]} for p in run.predictions], meta["metric"], meta["experiences"],
                  meta["preservation"])
    n0 = meta["scenario_settings"]["utterances"]["test_per_set"]
    comp = {s: components(b, s, args.measure) for s in b.systems}
    k0 = max(c["k0"] for c in comp.values())
    print(f"run {args.run_dir}: {n0} test utterances per set, {k0} seeds, {len(b.systems)} strategies; "
          f"measure {args.measure}; MDD = {MDD_FACTOR:.3f} x SE; target MDD {args.target} "
          f"(SE {args.target / MDD_FACTOR:.4f})")
    print("SE(n0): the bootstrap's; model: the decomposition's SE at (n0, k0); k=K floor: the MDD of the seed part "
          "alone with K seeds (no test-set size removes it); MDD n=N,k=K: modelled; n k=K: utterances per set needed "
          "for MDD <= target with K seeds\n")
    pairs = []
    for a, c in itertools.combinations(b.systems, 2):
        d = b.compare(a, c, args.measure)
        ca, cc = comp[a], comp[c]
        pair = {"a": a, "b": c, "n0": n0, "k0": k0, "d": d, "U": float(np.var((ca["mean"] - cc["mean"])[1:], ddof=1)),
                "I": ca["I"] + cc["I"], "tau": ca["tau"] + cc["tau"]}
        pairs.append(pair)
    head = (f"{'pair':26s} {'diff':>7s} {'SE(n0)':>7s} {'model':>6s} {'MDD':>6s} {'±half':>6s} "
            + " ".join(f"{f'k={k} floor':>10s}" for k in seed_counts) + "  "
            + " ".join(f"{f'MDD n={n},k={k}':>13s}" for k in seed_counts[:2] for n in sizes) + "  "
            + " ".join(f"{f'n k={k}':>7s}" for k in seed_counts))
    print(head)
    for p in pairs:
        d = p["d"]
        se_model, _ = model(p, n0, k0)
        cells = [f"{p['a'] + ' vs ' + p['b']:26s}",
                 f"{d.point:+7.3f}", f"{d.se:7.4f}", f"{se_model:6.4f}", f"{d.mdd:6.3f}", f"{d.half_width:6.3f}"]
        cells += [f"{MDD_FACTOR * model(p, n0, k)[1]:10.3f}" for k in seed_counts]
        line = " ".join(cells) + "  " + " ".join(f"{MDD_FACTOR * model(p, n, k)[0]:13.3f}"
                                                 for k in seed_counts[:2] for n in sizes)
        line += "  " + " ".join(f"{needed(p, k, args.target):7.0f}" if math.isfinite(needed(p, k, args.target))
                                else f"{'never':>7s}" for k in seed_counts)
        print(line)

    typical = [p for p in pairs if p["a"] in TYPICAL and p["b"] in TYPICAL]
    if typical:
        print(f"\ntypical pairs (every pair of {', '.join(s for s in TYPICAL if s in b.systems)}: {len(typical)} pairs):")
        print(f"  at n0 = {n0}: median SE {np.median([p['d'].se for p in typical]):.4f}, "
              f"median MDD {np.median([p['d'].mdd for p in typical]):.3f}, "
              f"range {min(p['d'].mdd for p in typical):.3f} to {max(p['d'].mdd for p in typical):.3f}")
        for k in seed_counts:
            need = sorted(needed(p, k, args.target) for p in typical)
            reach = [x for x in need if math.isfinite(x)]
            median = np.median(need)
            at = ", ".join(f"n={n}: {np.median([MDD_FACTOR * model(p, n, k)[0] for p in typical]):.3f}" for n in sizes)
            print(f"  k = {k} seeds: n per set for MDD <= {args.target}: median "
                  f"{f'{median:.0f}' if math.isfinite(median) else 'never'}; reachable for {len(reach)} of "
                  f"{len(need)} pairs" + (f" (n from {min(reach):.0f} to {max(reach):.0f})" if reach else "")
                  + f"; median MDD at {at}")
    print("\ncaveats: seed spreads (tau) are estimated from", k0, "seeds (2 degrees of freedom for 3 seeds: uncertain "
          "by a factor of several); more training data trains other models; new test sentences are assumed as "
          "variable as these; every test utterance is a distinct sentence (voices alternate), so utterances are the "
          "bootstrap's independent units.")
    if args.profile:
        wall_clock(args.profile, args.timings.split(","), [1, *seed_counts])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
