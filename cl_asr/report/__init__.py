"""Reports from results files alone (no model): summary.csv, summary_intervals.csv, report.md, report.html
(self-contained, images embedded) and plots/*.png, for one run (`write_report`) or across runs
(`write_comparison`: several backbones, scenarios or versions of the code, aligned by strategy and experience).

Every error figure carries a 95% bootstrap interval over test utterances (and seeds); differences between
strategies are paired bootstrap tests (stats.py). A report of several runs names each strategy `run/strategy`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics.continual import CLMASR_FORMULAS, HIGHER_IS_BETTER, SIGN_CONVENTION
from ..results import write_text_atomic
from ..variants import describe, file_component
from . import plots
from .claims import check_claims, load_claims
from .load import Progress, Run, check_comparable, load_run, progress, run_labels
from .render import Block, to_html, to_markdown
from .stats import MDD_FACTOR, N_REPLICATES, RESOLUTION, Bootstrap, NoUtteranceCounts, PointEstimates
from ..orders import split as split_order
from .tables import joint_reference, row_label, summary

ARROW = {True: "↑", False: "↓"}
BETTER = {**HIGHER_IS_BETTER, "base_error": False}
ERROR_MEASURES = ["avg_error", "learned_error", "base_error"]
TRANSFER_MEASURES = ["bwt", "forgetting", "fwt", "base_error_delta", "intransigence"]
UNCERTAINTY = (
    f"Intervals in brackets are 95% bootstrap intervals ({N_REPLICATES} replicates): each replicate redraws every "
    "test set's utterances with replacement (the same draw for every strategy and run, so comparisons are paired) "
    "and, where there are several seeds, each strategy's seeds; error rates are re-pooled and every measure "
    "recomputed. `± x` is the standard deviation over seeds. A difference marked (n.s.) has an interval that "
    "includes 0: not significant at the 5% level. **MDD** (minimum detectable difference) = (z₀.₉₇₅ + z₀.₈₀) × SE "
    f"= {MDD_FACTOR:.2f} × SE, where SE is the standard deviation of the bootstrap replicates of the paired "
    "difference: the smallest true difference that this test-set size (and these seeds) would find significant at "
    "5% (two-sided) with 80% power. An n.s. difference is not shown to be a tie: true differences up to about its "
    "MDD would often come out n.s. at this test-set size. `±h` is an interval's half-width. Test sets are small in "
    "the quick profiles, so intervals are wide and MDDs large."
)
WORST_PER_SYSTEM = 3


def _fmt_params(n) -> str:
    if n is None or pd.isna(n):
        return "–"
    n = int(n)
    return f"{n / 1e6:.2f}M" if n >= 1e6 else (f"{n / 1e3:.1f}k" if n >= 1e3 else str(n))


def _fmt_bytes(n) -> str:
    if n is None or pd.isna(n) or not n:
        return "–"
    n = float(n)
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _stored_bytes(sc, system: str):
    sizes = [c.get("stored_bytes") for c in sc.costs if c["system"] == system and not c.get("failure")]
    return max((b for b in sizes if b), default=None)


def _facts(meta: dict) -> str:
    cfg, prof, settings = meta["config"], meta["config"]["profile_config"], meta.get("scenario_settings", {})
    window = prof["encoder_window_seconds"]
    window_note = (f"{window:g} s (truncated from Whisper's 30 s window for speed; this costs accuracy, "
                   "identically for every strategy)" if window < 30 else "30 s (Whisper's native window)")
    utt = settings.get("utterances", {})
    split = settings.get("evaluated_split", "test")  # "dev": a tuning run, evaluated on dev sets in their place
    decode = settings.get("decode_language", {})
    lid = settings.get("lid_probabilities", {})
    decode_txt = ", ".join(
        f"{k} as `{v}`" + (f" (LID: {', '.join(f'{c} {p:.2f}' for c, p in list(lid[k].items())[:3])})" if k in lid else "")
        for k, v in decode.items()
    )
    git = meta.get("git", {})
    dev = meta.get("device", {})
    device = dev.get("gpu") or f"{dev.get('cpu', '?')} ({dev.get('cpu_threads', '?')} threads)"
    seeds = cfg.get("seeds", [cfg.get("seed", 0)])
    lines = [
        f"- **Scenario**: `{cfg['scenario']}`, profile `{cfg['profile']}`; experiences in order: "
        f"{', '.join(meta['experiences'])}; preservation sets: {', '.join(meta['preservation']) or 'none'}",
        f"- **Backbone**: `{cfg['backbone']}`; encoder window {window_note}",
        (f"- **Data**: {utt['train_sentences_per_experience']} training sentences per experience (text only, no "
         f"audio), {utt.get(f'{split}_per_set', '?')} {split} utterances per set ({utt.get(f'total_{split}', '?')} utterances, "
         if "train_sentences_per_experience" in utt else
         f"- **Data**: {utt.get('train_per_experience', '?')} training utterances per experience, "
         f"{utt.get(f'{split}_per_set', '?')} {split} utterances per set ({utt.get('total', '?')} utterances, ")
        + f"{utt.get('hours', 0) * 60:.1f} minutes of speech in all); {prof['epochs']} epochs, batch {prof['batch_size']}"
        + (f"; source: {settings['data_source']}" if settings.get("data_source") else ""),
        *_data_shortfall_lines(utt, settings.get("repairs", {}), prof),
        *([(f"- **Profile overrides** (`--set`, on top of profile `{cfg['profile']}`): "
            f"{describe(cfg['profile_overrides'])}")] if cfg.get("profile_overrides") else []),
        f"- **Seeds**: {', '.join(map(str, seeds))} (every strategy once per seed; same backbone and test sets)",
        f"- **Decode language** (the language token, identical for every strategy): {decode_txt or 'n/a'}",
        f"- **Metric**: {meta['metric'].upper()} (Whisper normaliser, pooled over utterances); "
        f"greedy decoding capped at {prof['max_new_tokens']} new tokens",
        # what scoring did to references and hypotheses, per language (cl_asr/metrics/text.py normalisation_notes)
        *([f"- **Normalisation** (references and hypotheses alike): {'; '.join(settings['normalisation'])}"]
          if settings.get("normalisation") else []),
        *[f"- **Real speech** `{name}`: {r.get('data_source', '?')}; {r.get('utterances', '?')} utterances of its "
          f"{r.get('split', '?')} split" for name, r in (settings.get("real_preservation") or {}).items()],
        f"- **Device**: {device}; git commit `{(git.get('commit') or 'unknown')[:12]}`"
        f"{' (uncommitted changes)' if git.get('dirty') else ''}; started {meta.get('started', '?')}",
        *_lock_line(meta.get("environment_lock")),
    ]
    if settings.get("text_only_training"):
        described = {r["strategy"]: r["description"] for r in meta.get("strategy_runs", [])
                     if r.get("description") and not r.get("failure")}
        lines.append("- **Text-only training**: the training sets have no audio. The encoder gets no input, so only "
                     "decoder-side parameters learn, and the decoder attends to one all-zero frame (the 'empty "
                     "prompt') unless a strategy brings its own stand-in for audio (such as a learned pseudo-audio "
                     "prompt): a strategy that fine-tunes the model is, here, decoder fine-tuning on text without "
                     "a prompt, the 'empty prompt' baseline."
                     + (" What each strategy does (its description in run.json): "
                        + "; ".join(f"`{s}` — {d}" for s, d in described.items()) + "." if described else ""))
    if meta.get("command"):
        lines.append(f"- **Command**: `{meta['command']}`")
    return "\n".join(lines)


def _variant_blocks(meta: dict, heading: str = "h2") -> list[Block]:
    """The run's variants (cl_asr/variants.py): each strategy run with some config values changed, its base and
    those values; every other value is its base's (run.json config.strategies holds each full config)."""
    variants = meta.get("config", {}).get("variants") or {}
    if not variants:
        return []
    return [Block(heading, "**Variants**" if heading == "p" else "Variants"),
            Block("p", "Strategies run with some config values changed (`--strategies BASE[KEY=VALUE,...]` or a "
                       "`--variants` file): each is a strategy of its own in every table and figure below; its other "
                       "values are its base strategy's (run.json `config.strategies` holds every full config)."),
            Block("table", pd.DataFrame([{"strategy": name, "variant of": v["strategy"],
                                          "overrides": describe(v["overrides"])} for name, v in variants.items()]))]


def _lock_line(lock: dict | None) -> list[str]:
    """Whether the run's packages were exactly those of the lock file (README, "Reproducibility")."""
    if not lock:
        return []  # a run from before the lock was recorded
    if lock.get("sha256") is None:
        return ["- **Environment**: no lock file found (not a checkout), so the package versions were not checked"]
    where = f"`{lock['file']}` (sha256 {lock['sha256'][:12]}, {lock.get('pins', '?')} exact versions)"
    if lock.get("matches"):
        return [f"- **Environment**: every package at its version in {where}"]
    differs = ", ".join(f"{n} {d['installed'] or 'missing'} (locked {d['locked']})"
                        for n, d in lock.get("differs", {}).items())
    return [f"- **Environment**: not the locked one: {differs} differ from {where}"]


def _data_shortfall_lines(utt: dict, repairs: dict, prof: dict) -> list[str]:
    """Sets smaller than the profile asks for, and what each set left out or repaired (real corpora: files
    longer than the encoder window left out, other rates resampled to 16 kHz, multi-channel audio down-mixed)."""
    lines = []
    per_set = utt.get("per_set", {})
    evaluated = utt.get("test_per_set", utt.get("dev_per_set"))
    wanted = {"train": utt.get("train_per_experience"), "test": evaluated, "preservation": evaluated}
    short = [f"{name} {n} (of {wanted[name.split('/')[0]]})" for name, n in per_set.items()
             if wanted.get(name.split("/")[0]) and n < wanted[name.split("/")[0]]]
    if short:
        lines.append("- **Smaller sets than the profile asks for** (not enough usable utterances): " + ", ".join(short))
    if utt.get("longer_than_window"):
        lines.append(f"- **Cut by the window**: {utt['longer_than_window']} utterance(s) are longer than the "
                     f"{prof['encoder_window_seconds']:g} s encoder window; the encoder saw only their first "
                     f"{prof['encoder_window_seconds']:g} s")
    words = {"left_out_longer_than_max_seconds": f"left out as too long (encoder window {prof['encoder_window_seconds']:g} s, or the set's max_seconds)",
             "resampled_to_16k": "resampled to 16 kHz", "downmixed_to_mono": "down-mixed to mono"}
    done = [f"{name}: " + ", ".join(f"{n} {words.get(k, k)}" for k, n in counts.items())
            for name, counts in repairs.items() if counts]
    if done:
        lines.append("- **Left out or repaired while loading**: " + "; ".join(done))
    return lines


def _progress_block(p: Progress, where: str = "This run") -> Block | None:
    """At the top of an unfinished run's report: that it is unfinished, and what is missing or partial."""
    if p.finished:
        return None
    why = {"running": "it did not finish (interrupted, or still running): run the same command again to resume",
           "incomplete": "some strategies failed (section Failures): run the same command again to retry them"}
    lines = "\n".join(f"- {line}" for line in p.lines())
    return Block("p", f"**{where} is incomplete**: {why.get(p.status, f'its status is {p.status!r}')}. The figures "
                      f"below cover only the {len(p.complete)} of {p.asked} strategy runs that finished. Missing or "
                      f"partial:\n\n{lines}")


class _Scenario:
    """One scenario's runs, their per-seed summaries and their uncertainty, with systems named for the page."""

    def __init__(self, runs: list[Run]):
        check_comparable(runs)
        self.runs = runs
        first = runs[0].meta
        self.name, self.metric = runs[0].scenario, first["metric"]
        self.experiences, self.preservation = first["experiences"], first["preservation"]
        tables, results, preds, costs = [], [], [], []
        for run in runs:
            t = summary(run.meta, run.results)
            t.insert(1, "run", run.label or run.path.name)
            t.insert(2, "system", [run.system(s) for s in t.strategy])
            tables.append(t)
            r = run.results.copy()
            r["system"] = [run.system(s) for s in r.strategy]
            results.append(r)
            done = {(s, int(seed)) for s, seed in zip(t.strategy, t.seed)}
            preds += [{**p, "system": run.system(p["strategy"])} for p in run.predictions
                      if (p["strategy"], p["seed"]) in done]
            costs += [{**s, "system": run.system(s["strategy"])} for s in run.meta.get("strategy_runs", [])]
        self.table = pd.concat(tables, ignore_index=True)
        self.progress = {run.label: progress(run.meta, run.results) for run in runs}
        if self.table.empty:
            raise ValueError(f"{', '.join(str(r.path) for r in runs)}: no strategy has a complete error matrix "
                             "yet, nothing to report (" + "; ".join(
                                 line.replace("`", "") for p in self.progress.values() for line in p.lines()) + ")")
        # summary.csv lists what did not finish too, so that the file says it is the summary of an unfinished run
        self.unfinished = pd.DataFrame([
            {"scenario": self.name, "run": run.label or run.path.name, "system": run.system(name), "strategy": name,
             "seed": seed, "status": state}
            for run in runs for state, items in (
                ("failed", self.progress[run.label].failed), ("partial", self.progress[run.label].partial),
                ("cannot run", self.progress[run.label].cannot_run),
                ("not started", self.progress[run.label].missing))
            for name, seed, *_ in items])
        self.results = pd.concat(results, ignore_index=True)
        self.predictions, self.costs = preds, costs
        self.systems = list(dict.fromkeys(self.table.system))
        joint = {c["system"] for c in costs if c.get("joint")}
        joint_for = {}  # each run's strategies against that run's joint reference (run.json's `joint: true`)
        for run in runs:
            strategies = set(self.table[self.table.run == (run.label or run.path.name)].strategy)
            ref = joint_reference(run.meta.get("strategy_runs", []), strategies)
            if ref is not None:
                joint_for.update({run.system(s): run.system(ref) for s in strategies})
        others = tuple(m for m in dict.fromkeys(self.results.metric) if m != self.metric)
        # rows trained in another order of the experiences (--orders): system -> its order
        self.orders = {run.system(s): list(o) for run in runs
                       for s, o in run.meta.get("config", {}).get("orders", {}).items()}
        try:
            self.stats = Bootstrap(preds, self.metric, self.experiences, self.preservation, joint, joint_for, others,
                                   orders=self.orders)
            self.intervals_note = ""
        except NoUtteranceCounts as exc:
            self.stats = PointEstimates(self.table, self.results, self.metric)
            self.intervals_note = (f"No intervals, significance tests or minimum detectable differences (MDD) in "
                                   f"this report: {exc}.")
        order = sorted(self.systems, key=lambda s: self.stats.estimate(s, "avg_error").point)
        self.systems = order

    def est(self, system: str, measure: str):
        return self.stats.estimate(system, measure)

    def order_of(self, system: str) -> list[str]:
        """The experiences in the order `system` learned them (cl_asr/orders.py)."""
        return self.orders.get(system, self.experiences)

    def order_groups(self) -> dict[str, list[str]]:
        """Strategy (with its run) -> its rows in two or more stream orders, the scenario's order first."""
        groups: dict[str, list[str]] = {}
        for s in self.systems:
            groups.setdefault(split_order(s)[0], []).append(s)
        return {g: sorted(members, key=lambda m: m in self.orders) for g, members in groups.items()
                if len(members) > 1 and any(m in self.orders for m in members)}


def _summary_blocks(sc: _Scenario) -> list[Block]:
    best = sc.systems[0]
    other_avgs = [m for m in sc.stats.measures() if m.startswith("avg_") and m != "avg_error"]
    rows = []
    for s in sc.systems:
        row = {"strategy": s, "seeds": sc.est(s, "avg_error").n_seeds,
               "avg_error ↓": sc.est(s, "avg_error").text()}
        diff = sc.stats.compare(s, best, "avg_error") if s != best else None
        row["vs best ↓"] = "best" if s == best else (diff.text() if diff else
                                                     f"{sc.est(s, 'avg_error').point - sc.est(best, 'avg_error').point:+.3f}")
        if not isinstance(sc.stats, PointEstimates):
            row["MDD vs best"] = "–" if s == best else diff.mdd_text()
        row["learned_error ↓"] = sc.est(s, "learned_error").text()
        row["base_error ↓"] = sc.est(s, "base_error").text()
        row["stored / experience ↓"] = _fmt_bytes(_stored_bytes(sc, s))
        for m in other_avgs:
            row[f"{m} ↓"] = sc.est(s, m).text()
        rows.append(row)
    transfer = []
    show = [m for m in TRANSFER_MEASURES if any(not np.isnan(sc.est(s, m).point) for s in sc.systems)]
    for s in sc.systems:
        transfer.append({"strategy": s, **{f"{m} {ARROW[BETTER[m]]}": sc.est(s, m).text(signed=True) for m in show}})
    routing = sc.table[sc.table.routing.astype(str) != ""]
    blocks = [Block("h2", f"Summary ({sc.metric.upper()})"),
              Block("p", "Strategies from lowest to highest final average error. `vs best`: "
                         + (f"the difference from {best} (no interval: see above)."
                            if isinstance(sc.stats, PointEstimates) else
                            f"the paired difference from {best} (interval; n.s. = not significant); `MDD vs best`: "
                            "its minimum detectable difference (see above).")
                         + " `stored / experience`: the largest checkpoint the strategy wrote after an experience "
                           "(what it must keep to go on: its trained parameters; the whole model for full "
                           "fine-tuning)."),
              Block("table", pd.DataFrame(rows)),
              Block("h3", "Forgetting and transfer"), Block("table", pd.DataFrame(transfer))]
    if len(routing):
        r = routing.groupby("system", sort=False).agg(routing=("routing", "first"),
                                                      routing_accuracy=("routing_accuracy", "mean"))
        blocks += [Block("p", "Routing: how a strategy with one parameter set per experience picks the set at "
                              "evaluation (`oracle` = the experience identity, `lid` = Whisper's language ID); "
                              "routing accuracy = share of final test utterances sent to their own set."),
                   Block("table", r.reset_index().rename(columns={"system": "strategy"}))]
    return blocks


def _ranking_blocks(sc: _Scenario, plot_dir: Path, prefix: str, base: Path) -> list[Block]:
    if isinstance(sc.stats, PointEstimates) or len(sc.systems) < 2:
        return []
    n = len(sc.systems)
    diff = pd.DataFrame(np.nan, index=sc.systems, columns=sc.systems)
    sig = pd.DataFrame(True, index=sc.systems, columns=sc.systems)
    mdds = {}  # every pair's minimum detectable difference (the same for a - b and b - a)
    for a in sc.systems:
        for b in sc.systems:
            if a != b:
                d = sc.stats.compare(a, b, "avg_error")
                diff.loc[a, b], sig.loc[a, b] = d.point, d.significant
                if not np.isnan(d.mdd):
                    mdds.setdefault(tuple(sorted((a, b))), d.mdd)
    path = plots.pairwise_heatmap(diff, sig, "avg_error", plot_dir / f"{prefix}pairwise_avg_error.png")
    steps = []
    for better, worse in zip(sc.systems, sc.systems[1:]):
        d = sc.stats.compare(worse, better, "avg_error")
        steps.append({"strategy": worse, "next better": better, "difference in avg_error": d.text(),
                      "p": f"{d.p:.3f}", "significant": "yes" if d.significant else "no", "MDD": d.mdd_text(),
                      "interval ±": "–" if np.isnan(d.half_width) else f"±{d.half_width:.3f}"})
    spread = ""
    if mdds:
        order = sorted(mdds.items(), key=lambda kv: kv[1])
        (lo_pair, lo), (hi_pair, hi) = order[0], order[-1]
        spread = (f" Over the {len(mdds)} pairs the minimum detectable difference in final average error ranges "
                  f"from {lo:.3f} ({' vs '.join(lo_pair)}) to {hi:.3f} ({' vs '.join(hi_pair)}), median "
                  f"{float(np.median(list(mdds.values()))):.3f}: a true difference smaller than a pair's MDD is "
                  "likely to come out n.s. here.")
    return [Block("h2", "Is the ranking real? Paired differences"),
            Block("p", f"Every pair of the {n} strategies: row minus column in final average error, from the paired "
                       "bootstrap; grey cells marked n.s. are not significant. The table walks down the ranking: "
                       "is each strategy significantly worse than the one above it? `MDD`: the pair's minimum "
                       "detectable difference; `interval ±`: the 95% interval's half-width." + spread),
            Block("img", path.relative_to(base).as_posix(), "paired differences"),
            Block("table", pd.DataFrame(steps))]


def _final_blocks(sc: _Scenario, plot_dir: Path, prefix: str, base: Path) -> list[Block]:
    last = len(sc.experiences) - 1
    sets = sc.experiences + sc.preservation
    cells, rows = [], []
    for s in sc.systems:
        row = {"strategy": s}
        for name in sets:
            e = sc.stats.cell(s, last, name)
            row[name + (" (base)" if name in sc.preservation else "")] = e.text()
            cells.append({"system": s, "set": name, "point": e.point, "low": e.low, "high": e.high})
        rows.append(row)
    bars = plots.final_error_bars(pd.DataFrame(cells), sc.metric, plot_dir / f"{prefix}final_error.png")
    blocks = [Block("h2", "Final error on every set"),
              Block("p", f"{sc.metric.upper()} after the last experience (mean over seeds, 95% interval)."),
              Block("table", pd.DataFrame(rows)), Block("img", bars.relative_to(base).as_posix(), "final error per set")]
    other = [m for m in dict.fromkeys(sc.results.metric) if m != sc.metric]
    if other:
        blocks += [Block("h2", "Other metrics after the last experience"),
                   Block("p", "Every other metric scored on each set, after the last experience (mean over seeds, "
                              "95% interval): `mer_<lang>` is the mixed error rate on that language's part of a "
                              "code-switched set (edits attributed to the language of the reference token; the parts "
                              "add up to MER), `eer` the entity error rate (share of reference entities not "
                              "recognised intact), `wer`/`cer` word and character error rates. All are error rates: "
                              "lower is better.")]
        for m in other:
            scored = [n for n in sets if ((sc.results.metric == m) & (sc.results.eval_on == n)).any()]
            t = pd.DataFrame([{"strategy": s, **{n: sc.stats.cell(s, last, n, m).text() for n in scored}}
                              for s in sc.systems])
            blocks += [Block("h3", m.upper() if "_" not in m else f"MER on the {m[4:]} part"), Block("table", t)]
    return blocks


def _curve_and_matrix_blocks(sc: _Scenario, plot_dir: Path, prefix: str, base: Path) -> list[Block]:
    sets = sc.experiences + sc.preservation
    steps = list(range(-1, len(sc.experiences)))
    cells = []
    for s in sc.systems:
        for name in sets:
            for step in steps:
                e = sc.stats.cell(s, step, name)
                if not np.isnan(e.point):
                    cells.append({"system": s, "set": name, "step": step, "point": e.point, "low": e.low,
                                  "high": e.high})
    in_order = [c for c in cells if c["system"] not in sc.orders]  # x is the scenario's order of experiences
    curves = plots.error_curves(pd.DataFrame(in_order), sc.experiences, sc.metric, plot_dir / f"{prefix}curves.png")
    blocks = [Block("h2", "Error over the course of training"),
              Block("p", "Each panel is one set; x: what the model has been trained through."
                    + (" Rows trained in another order of the experiences (`strategy@order`) are not drawn here "
                       "(their x would be another order): see their error matrices." if sc.orders else "")),
              Block("img", curves.relative_to(base).as_posix(), "error of each set over training"),
              Block("h2", "Error matrices"),
              Block("p", "Row: what the model has been trained through; column: the set evaluated (mean over seeds, "
                         "95% interval). Preservation (base-language) sets are marked (base).")]
    for s in sc.systems:
        points = pd.DataFrame({name: [sc.stats.cell(s, step, name).point for step in steps] for name in sets},
                              index=steps)
        order = sc.order_of(s)  # columns and rows in the order this row learned the experiences
        new, pres = points[order], points[sc.preservation]
        n_seeds = sc.est(s, "avg_error").n_seeds
        title = f"{s} (mean over {n_seeds} seeds)" if n_seeds > 1 else s
        safe = file_component(s.replace("/", "__"))  # a variant's name is no file name as it is
        path = plots.matrix_heatmap(new, pres, order, title, sc.metric, plot_dir / f"{prefix}matrix_{safe}.png")
        table = pd.DataFrame({(name + (" (base)" if name in sc.preservation else "")):
                              [sc.stats.cell(s, step, name).text() for step in steps]
                              for name in order + sc.preservation})
        table.insert(0, "trained through", [row_label(i, order) for i in steps])
        table = table[[c for c in table.columns if c == "trained through" or table[c].ne("–").any()]]
        blocks += [Block("h3", s), Block("table", table),
                   Block("img", path.relative_to(base).as_posix(), f"error matrix {s}")]
    return blocks


def _transfer_and_cost_blocks(sc: _Scenario, plot_dir: Path, prefix: str, base: Path) -> list[Block]:
    bars = []
    for s in sc.systems:
        for m in ("forgetting", "bwt", "base_error_delta"):
            e = sc.est(s, m)
            bars.append({"system": s, "measure": m, "point": e.point, "low": e.low, "high": e.high})
    forget = plots.forgetting_bars(pd.DataFrame(bars), plot_dir / f"{prefix}forgetting.png")
    costs = pd.DataFrame([c for c in sc.costs if not c.get("failure") and c["system"] in sc.systems])
    per_system = costs.groupby("system", sort=False).agg(
        trainable=("trainable_params", "max"), stored=("stored_params_per_experience", "max"),
        train_mean=("train_seconds", "mean"), train_std=("train_seconds", "std"), eval_mean=("eval_seconds", "mean"),
        memory=("peak_memory_mb", "max"), seeds=("seed", "nunique")).reindex(sc.systems)
    points = pd.DataFrame([{"system": s, "point": e.point, "low": e.low, "high": e.high,
                            "trainable_params": per_system.loc[s, "trainable"],
                            "stored_params_per_experience": per_system.loc[s, "stored"]}
                           for s, e in ((s, sc.est(s, "avg_error")) for s in sc.systems)])
    pareto = plots.error_vs_params(points, sc.metric, plot_dir / f"{prefix}error_vs_params.png")
    cost_rows = []
    for s, r in per_system.iterrows():
        decodes = [c["decodes"] for c in sc.costs if c["system"] == s and not c.get("failure")]
        cost_rows.append({
            "strategy": s, "seeds": int(r.seeds), "trainable params": _fmt_params(r.trainable),
            "stored params / experience": _fmt_params(r.stored),
            "stored bytes / experience": _fmt_bytes(_stored_bytes(sc, s)),
            "train s": f"{r.train_mean:.1f}" + (f" ± {r.train_std:.1f}" if r.seeds > 1 else ""),
            "eval s": f"{r.eval_mean:.1f}", "peak memory MB": r.memory,
            "decodes computed / reused": f"{sum(d['computed'] for d in decodes)} / {sum(d['reused'] for d in decodes)}",
            # seconds are comparable only between runs timed alike (run.json strategy_runs[].timed_on)
            "timed on": "; ".join(dict.fromkeys(d for c in sc.costs if c["system"] == s and not c.get("failure")
                                                for d in c.get("timed_on") or [])) or "–",
        })
    return [Block("h2", "Forgetting and transfer, plotted"),
            Block("img", forget.relative_to(base).as_posix(), "forgetting"),
            Block("h2", "Error against trainable and stored parameters"),
            Block("p", "Orange: the Pareto front (no other strategy has both fewer parameters and lower error)."),
            Block("img", pareto.relative_to(base).as_posix(), "error against parameters"),
            Block("h2", "Cost"),
            Block("p", "Mean over seeds (± standard deviation). Peak memory is the process's resident memory on CPU "
                       "(GPU allocator peak on CUDA), the largest over seeds. `timed on`: the devices the seconds "
                       "were measured on (a run resumed elsewhere, or run beside another job with fewer threads, "
                       "lists several; runs from before this was recorded show –). A decode is reused when the same "
                       "model state was already decoded on the same set (e.g. base-language sets under "
                       "frozen-backbone methods, or an untrained strategy under every seed)."),
            Block("table", pd.DataFrame(cost_rows))]


def _shorten(text: str, limit: int = 110) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _worst_blocks(sc: _Scenario) -> list[Block]:
    if not sc.predictions or "edits" not in sc.predictions[0]:
        return []
    last = len(sc.experiences) - 1
    rows = []
    for s in sc.systems:
        seed = sc.stats.seeds[s][0]
        cand = []
        for p in sc.predictions:
            if p["system"] != s or p["seed"] != seed or p["trained_through"] != last or p["stream"] != "test":
                continue
            for i, (e, n) in enumerate(zip(p["edits"][sc.metric], p["ref_tokens"][sc.metric])):
                cand.append((e / n if n else 0.0, e, p["eval_on"], p["ids"][i], n, p["refs"][i], p["hyps"][i]))
        for rate, e, name, uid, n, ref, hyp in sorted(cand, key=lambda c: (-c[0], -c[1], c[2], c[3]))[:WORST_PER_SYSTEM]:
            rows.append({"strategy": s, "set": name, "utterance": uid, "errors": f"{e} / {n}",
                         "reference": _shorten(ref), "hypothesis": _shorten(hyp) or "(empty)"})
    return [Block("h2", "Worst utterances"),
            Block("p", f"The {WORST_PER_SYSTEM} test utterances with the highest {sc.metric.upper()} per strategy after "
                       "the last experience (first seed): errors = edits / reference tokens. Every utterance's "
                       "output is in predictions.jsonl."),
            Block("table", pd.DataFrame(rows))]


def _claims_blocks(sc: _Scenario) -> list[Block]:
    claims, rows = load_claims(), []
    for run in sc.runs:
        name = run.label or run.path.name
        table = sc.table[sc.table.run == name]
        if table.empty:
            continue

        def compare(a, b, measure, run=run):
            if measure not in sc.stats.measures():
                return None
            return sc.stats.compare(run.system(a), run.system(b), measure)

        for v in check_claims(table, claims, compare):
            rows.append({**({"run": name} if len(sc.runs) > 1 else {}), "claim": v.text, "verdict": v.verdict,
                         "decision": v.decision, "significance": v.significance,
                         "MDD": "" if np.isnan(v.mdd) else f"{v.mdd:.3f}", "figures": v.figures, "source": v.source})
    n_seeds = max(len(sc.stats.seeds[s]) for s in sc.systems)
    return [Block("h2", "The papers' claims on this run" if len(sc.runs) == 1 else "The papers' claims, run by run"),
            Block("p", f"Each claim from `baselines/references.yaml` checked against this run's summary (mean over "
                       f"{n_seeds} seed{'s' if n_seeds > 1 else ''}). `verdict`: held when the direction of the means "
                       "is right. `decision` reads it with the paired bootstrap test of the difference behind it: "
                       "held (significant), not held (significant), or, when the difference is not significant, "
                       f"**not decided at this test-set size**, with the comparison's MDD and whether its 95% "
                       f"interval is narrower than ±{RESOLUTION:g}; claims about exact equalities are decided exactly. "
                       + ("This run has no per-utterance counts, so no claim has a test or an MDD."
                          if isinstance(sc.stats, PointEstimates) else
                          "`MDD`: the minimum detectable difference of that comparison (see above).")),
            Block("table", pd.DataFrame(rows))]


def _failure_blocks(sc: _Scenario) -> list[Block]:
    blocks = []
    failures = [c for c in sc.costs if c.get("failure")]
    if failures:
        blocks += [Block("h2", "Failures"),
                   Block("p", "Strategies that did not run to the end: `raised` = an exception inside the strategy "
                              "(its traceback is in run.json and the log; the others went on, and running the same "
                              "command again retries it from its last finished evaluation pass); `cannot run` = "
                              "the strategy does not apply to this scenario."),
                   Block("table", pd.DataFrame([{"strategy": c["system"], "seed": c["seed"],
                                                 "what happened": c["failure"]["kind"],
                                                 "during": c["failure"].get("during", ""),
                                                 "why": c["failure"]["reason"]}
                                                for c in failures]))]
    faults = [{"strategy": c["system"], "seed": c["seed"], "experience": f["experience"],
               "steps skipped": f"{f['skipped_steps']} of {f['steps']}",
               "experience ended early": "yes" if f["ended_early"] else "no", "what happened": f["reason"]}
              for c in sc.costs for f in c.get("training_faults", [])]
    if faults:
        blocks += [Block("h2", "Training faults"),
                   Block("p", "Steps whose loss or gradient was NaN or infinite were skipped (no parameter changed); "
                              "too many in a row ended that experience's training, and the run went on. The figures "
                              "above include these strategies as they were trained."),
                   Block("table", pd.DataFrame(faults))]
    return blocks


def _across_runs_blocks(sc: _Scenario) -> list[Block]:
    """The same strategy in different runs (backbones, versions of the code), paired on the same utterances."""
    if len(sc.runs) < 2 or isinstance(sc.stats, PointEstimates):
        return []
    first, rows = sc.runs[0], []
    for run in sc.runs[1:]:
        for strategy in dict.fromkeys(sc.table[sc.table.run == (run.label or run.path.name)].strategy):
            a, b = run.system(strategy), first.system(strategy)
            if a not in sc.systems or b not in sc.systems:
                continue
            row = {"strategy": strategy, "run": run.label, "against": first.label}
            for m in ("avg_error", "base_error_delta", "forgetting"):
                d = sc.stats.compare(a, b, m)
                row[f"Δ {m} {ARROW[BETTER[m]]}"] = d.text() if not np.isnan(d.point) else "–"
                if m == "avg_error":
                    row["MDD Δ avg_error"] = d.mdd_text()
            rows.append(row)
    if not rows:
        return []
    return [Block("h2", "The same strategy across runs"),
            Block("p", f"Each strategy in a later run minus the same strategy in {first.label}, paired on the same "
                       "test utterances (95% interval; n.s. = not significant; MDD = minimum detectable difference)."),
            Block("table", pd.DataFrame(rows))]


def _scenario_blocks(sc: _Scenario, plot_dir: Path, base: Path, prefix: str, heading: bool) -> list[Block]:
    blocks = [Block("h1", f"Scenario {sc.name}")] if heading else []
    if sc.intervals_note:
        blocks.append(Block("p", f"**{sc.intervals_note}**"))
    blocks += _summary_blocks(sc)
    blocks += _order_blocks(sc)
    blocks += _ranking_blocks(sc, plot_dir, prefix, base)
    blocks += _across_runs_blocks(sc)
    blocks += _final_blocks(sc, plot_dir, prefix, base)
    blocks += _failure_blocks(sc)
    blocks += _clmasr_blocks(sc)
    blocks += _claims_blocks(sc)
    blocks += _curve_and_matrix_blocks(sc, plot_dir, prefix, base)
    blocks += _transfer_and_cost_blocks(sc, plot_dir, prefix, base)
    blocks += _worst_blocks(sc)
    return blocks


CLMASR_COLUMNS = {"clmasr_awer": ("AWER ↓", False), "clmasr_bwt": ("BWT ↑", True), "clmasr_im": ("IM ↓", False),
                  "clmasr_fwt": ("FWT ↑", True)}


def _clmasr_blocks(sc: _Scenario) -> list[Block]:
    """CL-MASR's measures beside ours (summary.csv clmasr_*): mean over seeds ± standard deviation, per strategy."""
    cols = [c for c in CLMASR_COLUMNS if c in sc.table and sc.table[c].notna().any()]
    if not cols:
        return []
    rows = []
    for system in sc.systems:
        mine = sc.table[sc.table.system == system]
        row = {"strategy": system}
        for c in cols:
            values = mine[c].dropna()
            row[CLMASR_COLUMNS[c][0]] = ("–" if not len(values) else f"{values.mean():+.3f}" if CLMASR_COLUMNS[c][1]
                                         else f"{values.mean():.3f}") + (f" ± {values.std(ddof=1):.3f}"
                                                                        if len(values) > 1 else "")
        rows.append(row)
    missing = [what for c, what in (("clmasr_im", "a `joint` run (IM)"), ("clmasr_fwt", "a `single_task` run (FWT)"))
               if c not in cols]
    return [Block("h2", "CL-MASR's measures (WER)"),
            Block("p", CLMASR_FORMULAS + " Mean over seeds (± standard deviation); no intervals here."
                  + (f" Not computed for want of {' and '.join(missing)} in this run." if missing else "")),
            Block("table", pd.DataFrame(rows))]


ORDER_MEASURES = ("avg_error", "learned_error", "forgetting", "bwt", "fwt", "base_error_delta")


def _order_rows(sc: _Scenario) -> list[dict]:
    """summary_orders.csv: per strategy run in several orders and per measure, the mean over orders, the
    standard deviation, minimum and maximum over orders, and the 95% interval of the mean (paired bootstrap)."""
    out = []
    for group, members in sc.order_groups().items():
        paired = hasattr(sc.stats, "over_orders")  # per-utterance counts: the seeds every order ran, bootstrapped
        seeds = sc.stats.common_seeds(members) if paired else []
        if paired and not seeds:
            continue  # no seed that every order ran: nothing to compare on
        for m in ORDER_MEASURES:
            points = ([float(p[0]) for p in sc.stats.order_points(members, m)] if paired
                      else [sc.est(s, m).point for s in members])
            if all(np.isnan(points)):
                continue
            e = sc.stats.over_orders(members, m) if paired else None
            out.append({"scenario": sc.name, "strategy": group, "measure": m, "n_orders": len(members),
                        "seeds": ",".join(map(str, seeds)) if paired else "all (means over each row's seeds)",
                        "mean_over_orders": float(np.mean(points)),
                        "std_over_orders": float(np.std(points, ddof=1)), "min": float(np.min(points)),
                        "max": float(np.max(points)), "ci_low": e.low if e else float("nan"),
                        "ci_high": e.high if e else float("nan"),
                        "orders": "; ".join(">".join(sc.order_of(s)) for s in members)})
    return out


def _order_blocks(sc: _Scenario) -> list[Block]:
    """The order study: each measure averaged over the stream orders a strategy ran in, with its spread."""
    rows = _order_rows(sc)
    if not rows:
        return []
    table = []
    for group in dict.fromkeys(r["strategy"] for r in rows):
        row = {"strategy": group}
        for r in (r for r in rows if r["strategy"] == group):
            row["orders"], row["seeds"] = r["n_orders"], r["seeds"]
            interval = (f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if not np.isnan(r["ci_low"]) else "")
            row[f"{r['measure']} {ARROW[BETTER[r['measure']]]}"] = (
                f"{r['mean_over_orders']:.3f} ± {r['std_over_orders']:.3f}{interval} "
                f"(range {r['min']:.3f} to {r['max']:.3f})")
        table.append(row)
    orders = {r["strategy"]: r["orders"] for r in rows}
    return [Block("h2", "Stream orders"),
            Block("p", "Each strategy below was trained on the experiences in several orders (`--orders`; its row "
                       "in another order is named `strategy@first>second>...`, and keeps its own error matrix "
                       "below, rows and columns in its order). Each measure: mean over orders ± standard deviation "
                       "over orders [95% bootstrap interval of the mean over orders] (range: the best and worst "
                       "order), on the seeds every order ran (`seeds`). The spread says how much a single-order "
                       "figure depends on the order chosen."),
            Block("table", pd.DataFrame(table)),
            Block("p", "Orders: " + "; ".join(f"{g}: {o}" for g, o in orders.items()))]


def _interval_rows(sc: _Scenario) -> list[dict]:
    out = []
    for s in sc.systems:
        for m in sc.stats.measures():
            e = sc.est(s, m)
            out.append({"scenario": sc.name, "strategy": s, "measure": m, "mean": e.point, "std_over_seeds": e.std,
                        "ci_low": e.low, "ci_high": e.high, "n_seeds": e.n_seeds})
    return out


def _write(scenarios: list[_Scenario], out: Path, title: str, intro: list[Block]) -> Path:
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for stale in plot_dir.glob("*.png"):  # figures of an earlier report (other strategies, other layout)
        stale.unlink()
    blocks = [Block("h1", title), *intro, Block("h2", "How to read this report"),
              Block("p", SIGN_CONVENTION + " Arrows in headers (↓ lower is better, ↑ higher is better) hold for "
                    "the whole report."), Block("p", UNCERTAINTY)]
    many = len(scenarios) > 1
    for sc in scenarios:
        blocks += _scenario_blocks(sc, plot_dir, out, f"{sc.name}_" if many else "", heading=many)
    table = pd.concat([sc.table.assign(status="complete") for sc in scenarios]
                      + [sc.unfinished for sc in scenarios if len(sc.unfinished)], ignore_index=True)
    table = table[[c for c in ("scenario", "run", "system", "strategy", "seed", "status") if c in table]
                  + [c for c in table if c not in ("scenario", "run", "system", "strategy", "seed", "status")]]
    if len({r.label for sc in scenarios for r in sc.runs}) == 1 and not scenarios[0].runs[0].label:
        table = table.drop(columns=["run", "system"])  # one run: the per-seed table as it always was
    write_text_atomic(out / "summary.csv", table.to_csv(index=False))
    write_text_atomic(out / "summary_intervals.csv",
                      pd.DataFrame([r for sc in scenarios for r in _interval_rows(sc)]).to_csv(index=False))
    over_orders = [r for sc in scenarios for r in _order_rows(sc)]
    if over_orders:  # a run with --orders: each measure averaged over orders, with its spread
        write_text_atomic(out / "summary_orders.csv", pd.DataFrame(over_orders).to_csv(index=False))
    write_text_atomic(out / "report.md", to_markdown(blocks))
    write_text_atomic(out / "report.html", to_html(blocks, out, title))
    return out / "report.md"


def write_report(run_dir: Path) -> Path:
    """Write summary.csv, summary_intervals.csv, report.md, report.html and plots/ for `run_dir`."""
    run = load_run(run_dir)
    sc = _Scenario([run])
    unfinished = _progress_block(sc.progress[run.label])
    title = f"cl_asr: {sc.name} ({run.meta['config']['profile']} profile){' — incomplete' if unfinished else ''}"
    return _write([sc], Path(run_dir), title,
                  [b for b in (unfinished, Block("p", _facts(run.meta))) if b] + _variant_blocks(run.meta))


def write_comparison(run_dirs: list[Path], out: Path) -> Path:
    """One report across runs: runs of the same scenario are aligned by strategy and experience (and refused
    when their test sets differ); different scenarios get a section each."""
    if len(run_dirs) < 2:
        raise ValueError("compare needs at least two run directories")
    labels = run_labels(run_dirs)
    runs = [load_run(p, label) for p, label in zip(run_dirs, labels)]
    out = Path(out)
    for r in runs:
        if out.resolve() == r.path.resolve():
            raise ValueError(f"--out {out} is one of the runs compared: write the comparison elsewhere")
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.scenario, []).append(r)
    scenarios = [_Scenario(g) for g in groups.values()]
    intro = [Block("p", "Runs compared (strategies are named `run/strategy`):"),
             Block("table", pd.DataFrame([{
                 "run": r.label, "directory": str(r.path), "scenario": r.scenario,
                 "profile": r.meta["config"]["profile"], "backbone": r.meta["config"]["backbone"],
                 "seeds": ", ".join(map(str, r.meta["config"].get("seeds", [r.meta["config"].get("seed", 0)]))),
                 "git commit": (r.meta.get("git", {}).get("commit") or "unknown")[:12],
                 "started": r.meta.get("started", "?")} for r in runs]))]
    progress_of = {r.label: sc.progress[r.label] for sc in scenarios for r in sc.runs}
    intro[:0] = [b for r in runs if (b := _progress_block(progress_of[r.label], f"Run {r.label}"))]
    for r in runs:
        intro += [Block("h3", f"Run {r.label}"), Block("p", _facts(r.meta)),
                  *_variant_blocks(r.meta, heading="p")]
    return _write(scenarios, out, f"cl_asr comparison: {', '.join(labels)}", intro)
