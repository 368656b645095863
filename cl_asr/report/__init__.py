"""Reports from a run directory's results files alone: summary.csv, report.md, report.html, plots/*.png."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..metrics.continual import HIGHER_IS_BETTER, SIGN_CONVENTION
from ..results import read_run, write_text_atomic
from . import plots
from .render import Block, to_html, to_markdown
from .tables import matrices, row_label, summary, final_errors

ARROW = {True: "↑", False: "↓"}


def _fmt_params(n) -> str:
    if n is None or pd.isna(n):
        return "–"
    n = int(n)
    return f"{n / 1e6:.2f}M" if n >= 1e6 else (f"{n / 1e3:.1f}k" if n >= 1e3 else str(n))


def _facts(meta: dict) -> str:
    cfg, prof, settings = meta["config"], meta["config"]["profile_config"], meta.get("scenario_settings", {})
    window = prof["encoder_window_seconds"]
    window_note = (f"{window:g} s (truncated from Whisper's 30 s window for speed; this costs accuracy, "
                   "identically for every strategy)" if window < 30 else "30 s (Whisper's native window)")
    utt = settings.get("utterances", {})
    decode = settings.get("decode_language", {})
    lid = settings.get("lid_probabilities", {})
    decode_txt = ", ".join(
        f"{k} as `{v}`" + (f" (LID: {', '.join(f'{c} {p:.2f}' for c, p in list(lid[k].items())[:3])})" if k in lid else "")
        for k, v in decode.items()
    )
    git = meta.get("git", {})
    dev = meta.get("device", {})
    device = dev.get("gpu") or f"{dev.get('cpu', '?')} ({dev.get('cpu_threads', '?')} threads)"
    lines = [
        f"- **Scenario**: `{cfg['scenario']}`, profile `{cfg['profile']}`; experiences in order: "
        f"{', '.join(meta['experiences'])}; preservation sets: {', '.join(meta['preservation']) or 'none'}",
        f"- **Backbone**: `{cfg['backbone']}`; encoder window {window_note}",
        (f"- **Data**: {utt['train_sentences_per_experience']} training sentences per experience (text only, no "
         f"audio), {utt.get('test_per_set', '?')} test utterances per set ({utt.get('total_test', '?')} utterances, "
         if "train_sentences_per_experience" in utt else
         f"- **Data**: {utt.get('train_per_experience', '?')} training utterances per experience, "
         f"{utt.get('test_per_set', '?')} test utterances per set ({utt.get('total', '?')} utterances, ")
        + f"{utt.get('hours', 0) * 60:.1f} minutes of speech in all); {prof['epochs']} epochs, batch {prof['batch_size']}"
        + (f"; source: {settings['data_source']}" if settings.get("data_source") else ""),
        f"- **Decode language** (the language token, identical for every strategy): {decode_txt or 'n/a'}",
        f"- **Metric**: {meta['metric'].upper()} (Whisper normaliser, pooled over utterances); "
        f"greedy decoding capped at {prof['max_new_tokens']} new tokens",
        f"- **Device**: {device}; git commit `{(git.get('commit') or 'unknown')[:12]}`"
        f"{' (uncommitted changes)' if git.get('dirty') else ''}; started {meta.get('started', '?')}",
    ]
    if settings.get("text_only_training"):
        lines.append("- **Text-only training**: the training sets have no audio. The encoder gets no input and the "
                     "decoder attends to one all-zero frame (the 'empty prompt'), so only decoder-side parameters "
                     "learn: `fft` here is decoder fine-tuning on text without a prompt, the baseline `text_spt` "
                     "is compared with; `text_spt` attends to its learned pseudo-audio prompt instead.")
    if meta.get("command"):
        lines.append(f"- **Command**: `{meta['command']}`")
    return "\n".join(lines)


def write_report(run_dir: Path) -> Path:
    """Write summary.csv, report.md, report.html and plots/ for `run_dir`; return the report.md path."""
    run_dir = Path(run_dir)
    meta, rows = read_run(run_dir)
    results = pd.DataFrame(rows)
    metric = meta["metric"]
    table = summary(meta, results)
    if table.empty:
        raise ValueError(f"{run_dir}: no strategy has a complete error matrix yet, nothing to report")
    write_text_atomic(run_dir / "summary.csv", table.to_csv(index=False))

    plot_dir = run_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    title = f"cl_asr: {meta['config']['scenario']} ({meta['config']['profile']} profile)"
    blocks = [Block("h1", title), Block("p", _facts(meta)),
              Block("h2", "How to read this report"), Block("p", SIGN_CONVENTION)]

    # Summary, with the better direction of every column in its header.
    shown = table.copy()
    shown["trainable_params"] = shown["trainable_params"].map(_fmt_params)
    shown["stored_params_per_experience"] = shown["stored_params_per_experience"].map(_fmt_params)
    rename = {c: f"{c} {ARROW[HIGHER_IS_BETTER[c]]}" for c in HIGHER_IS_BETTER}
    rename["base_error"] = "base_error ↓"
    shown = shown.rename(columns=rename).drop(columns=["scenario", "metric"])
    blocks += [Block("h2", f"Summary ({metric.upper()})"), Block("table", shown)]

    final = final_errors(meta, results)
    bars = plots.final_error_bars(final, metric, plot_dir / "final_error.png")
    final_shown = final.reset_index()
    final_shown.columns = ["strategy"] + [f"{c}{' (base)' if c in meta['preservation'] else ''}" for c in final.columns]
    blocks += [Block("h2", "Final error on every set"),
               Block("p", f"{metric.upper()} after the last experience (mean over seeds)."),
               Block("table", final_shown), Block("img", bars.relative_to(run_dir).as_posix(), "final error per set")]

    other = [m for m in dict.fromkeys(results.metric) if m != metric]
    if other:
        n_exp = len(meta["experiences"])
        blocks += [Block("h2", "Other metrics after the last experience"),
                   Block("p", "Every other metric scored on each set, after the last experience (mean over seeds): "
                              "`mer_<lang>` is the mixed error rate on that language's part of a code-switched "
                              "set (edits attributed to the language of the reference token; the parts add up "
                              "to MER), `eer` the entity error rate (share of reference entities not recognised "
                              "intact), `wer`/`cer` word and character error rates. All are error rates: lower "
                              "is better.")]
        last = results[results.trained_through == n_exp - 1]
        for m in other:
            t = last[last.metric == m].pivot_table(index="strategy", columns="eval_on", values="value", aggfunc="mean")
            t = t.reindex(columns=[c for c in meta["experiences"] + meta["preservation"] if c in t.columns])
            blocks += [Block("h3", m.upper() if "_" not in m else f"MER on the {m[4:]} part"),
                       Block("table", t.round(4).reset_index())]

    failures = [s for s in meta.get("strategy_runs", []) if s.get("failure")]
    if failures:
        blocks += [Block("h2", "Strategies that did not run to the end"),
                   Block("table", pd.DataFrame([{"strategy": s["strategy"], "seed": s["seed"],
                                                 "what happened": s["failure"]["kind"],
                                                 "why": s["failure"]["reason"]} for s in failures]))]

    blocks.append(Block("h2", "Error matrices"))
    blocks.append(Block("p", "Row: what the model has been trained through; column: the set evaluated. "
                             "Preservation (base-language) sets are marked (base)."))
    for (strategy, seed), (new, base) in matrices(meta, results, metric).items():
        path = plots.matrix_heatmap(new, base, meta["experiences"], f"{strategy} (seed {seed})", metric,
                                    plot_dir / f"matrix_{strategy}_seed{seed}.png")
        m = pd.concat([new, base.add_suffix(" (base)")], axis=1)
        m.insert(0, "trained through", [row_label(i, meta["experiences"]) for i in m.index])
        blocks += [Block("h3", f"{strategy} (seed {seed})"), Block("table", m),
                   Block("img", path.relative_to(run_dir).as_posix(), f"error matrix {strategy}")]

    from .claims import check_claims, load_claims

    verdicts = check_claims(table, load_claims())
    n_seeds = table.seed.nunique()
    blocks += [Block("h2", "The papers' claims on this run"),
               Block("p", f"Each claim from `baselines/references.yaml` checked against this run's summary "
                          f"(mean over {n_seeds} seed{'s' if n_seeds > 1 else ''}). "
                          + ("One seed and no significance test: a verdict decided by a few hundredths is "
                             "within noise." if n_seeds == 1 else "")),
               Block("table", pd.DataFrame([{"claim": v.text, "verdict": v.verdict, "figures": v.figures,
                                             "source": v.source} for v in verdicts]))]

    forget = plots.forgetting_bars(table, plot_dir / "forgetting.png")
    pareto = plots.error_vs_params(table, metric, plot_dir / "error_vs_params.png")
    blocks += [Block("h2", "Forgetting and transfer"), Block("img", forget.relative_to(run_dir).as_posix(), "forgetting"),
               Block("h2", "Error against trainable parameters"),
               Block("img", pareto.relative_to(run_dir).as_posix(), "error against trainable parameters")]

    costs = pd.DataFrame([
        {"strategy": s["strategy"], "seed": s["seed"], "trainable params": _fmt_params(s["trainable_params"]),
         "stored params / experience": _fmt_params(s["stored_params_per_experience"]),
         "train s": s["train_seconds"], "train s per experience": ", ".join(map(str, s["train_seconds_per_experience"])) or "–",
         "eval s": s["eval_seconds"], "peak memory MB": s["peak_memory_mb"],
         "decodes computed / reused": f"{s['decodes']['computed']} / {s['decodes']['reused']}"}
        for s in meta.get("strategy_runs", []) if not s.get("failure")
    ])
    blocks += [Block("h2", "Cost"),
               Block("p", "Peak memory is the process's resident memory on CPU (GPU allocator peak on CUDA). "
                          "A decode is reused when the same model state was already decoded on the same set "
                          "(e.g. base-language sets under frozen-backbone methods)."),
               Block("table", costs)]

    md = to_markdown(blocks)
    write_text_atomic(run_dir / "report.md", md)
    write_text_atomic(run_dir / "report.html", to_html(blocks, run_dir, title))
    return run_dir / "report.md"
