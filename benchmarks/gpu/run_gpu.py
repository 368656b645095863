#!/usr/bin/env python
"""The GPU benchmark in one go: the FFT training step's model FLOP utilisation, then the `languages` scenario
with zero_shot, fft, spt_entire, lora and lapt (seed 0) at precision auto (bf16 on a GPU that has it), and a
summary of both: gpu.md and gpu.json in --out, the run itself in --out/languages-PROFILE/.

    python benchmarks/gpu/run_gpu.py --profile full --device cuda --out /tmp/gpu_run --deadline-s 480  # the GPU
    python benchmarks/gpu/run_gpu.py --profile micro --device cpu --out /tmp/gpu_micro                 # here, CI

MFU first (half a minute), so that a run cut by the deadline still leaves it. The deadline stops the run
(SIGINT, then SIGKILL) and keeps what it finished: the strategies in results.jsonl, reported as such.
benchmarks/gpu/README.md says what is measured and how the device calls go.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # cl_asr and benchmarks/ without an install (the GPU machine has none)

import torch  # noqa: E402

from benchmarks.utilisation import count_flops, matmul_flops_per_second, utilisation  # noqa: E402

SCENARIO = "languages"
STRATEGIES = "zero_shot,fft,spt_entire,lora,lapt"
REPORT_RESERVE_S = 60  # kept back from the deadline for writing the report of a run that was cut


def machine(device: torch.device) -> dict:
    from cl_asr.env_info import cpu_name

    info = {"device": str(device), "cpu": cpu_name(), "cpu_cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count, capability=f"{props.major}.{props.minor}",
                    bf16=torch.cuda.is_bf16_supported(), cuda=torch.version.cuda)
    return info


def fft_step_utilisation(profile_name: str, device: torch.device, overrides: dict | None = None) -> dict:
    """One FFT training step as the suite's loop runs it (ASRTemplate: forward under the run's autocast, loss
    projected at labelled positions only, backward, gradient clipping with its finiteness check, fused AdamW,
    zero_grad), at the profile's backbone, batch size and encoder window, on a batch of the profile's training
    sentences with noise for audio (values change neither the FLOPs nor the time; log-mel features are made
    once, outside the timed step). Its counted FLOPs per measured second, as a share of this device's dense
    matmul rate in the step's dtype. `overrides`: the run's --set values, so that the step is the run's."""
    import numpy as np
    import torch.nn.functional as F

    from cl_asr.backbones import load_backbone
    from cl_asr.backbones.window import set_encoder_window, window_feature_extractor
    from cl_asr.cl.collate import IGNORE, ASRCollator, with_prefix
    from cl_asr.data.text_bank import split_sentences
    from cl_asr.methods import Target, get_method, method_config
    from cl_asr.runner import resolve_precision
    from cl_asr.scenarios import load_scenario_builder
    from cl_asr.variants import with_overrides

    builder = load_scenario_builder(SCENARIO)
    profile = with_overrides(builder.profile(profile_name), overrides or {}, "--set")
    precision = resolve_precision("auto", device)  # what --set precision=auto gives the run
    backbone = load_backbone(profile.backbone, seed=0)
    set_encoder_window(backbone.model, profile.encoder_window_seconds)
    fe = window_feature_extractor(backbone.feature_extractor, profile.encoder_window_seconds)
    cfg = method_config("fft", profile_name, scenario=SCENARIO)
    method = get_method("fft")(cfg, backbone.model, backbone.tokenizer, seed=0)
    method.setup()
    model = method.model.to(device).train()
    language = builder.config.experiences[0]
    sentences = split_sentences(language, builder.test_pool_size(profile))[0][: profile.batch_size]
    rng = np.random.default_rng(0)
    rows = [{"id": str(i), "text": s, "language": language,
             "audio": {"array": (0.01 * rng.standard_normal(4 * 16_000)).astype(np.float32), "sampling_rate": 16_000}}
            for i, s in enumerate(sentences)]
    target = Target("train", 0, language, language, "es")  # the decode token changes no FLOP
    batch = ASRCollator(backbone.tokenizer, fe, {language: "es"})(rows)
    params = method.trainable_parameters()
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    feats = batch["input_features"].to(device)
    with method.route(target) as route:
        ids, labels = with_prefix(batch["decoder_input_ids"], batch["labels"], route.decoder_prefix)
    ids, labels = ids.to(device), labels.to(device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):  # as ASRTemplate
            hidden = model.model(input_features=feats, decoder_input_ids=ids).last_hidden_state
            where = labels != IGNORE
            loss = F.cross_entropy(model.proj_out(hidden[where]).float(), labels[where])
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        if bool(torch.isfinite(norm)):  # the suite's loop checks this every step (a device sync)
            optimiser.step()
        optimiser.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    flops = count_flops(step)  # also the first warm-up step
    cuda = device.type == "cuda"
    step_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    size = 8192 if cuda else 1024  # large enough to reach the rate; 1024^3 is ~30 ms on this 2-core CPU
    repeats = 10 if cuda else 3
    peak = matmul_flops_per_second(step_dtype, size=size, repeats=repeats, device=device)
    measured = utilisation(step, flops, peak, device=device, repeats=repeats, warmup=3 if cuda else 1)
    peaks = {str(step_dtype).removeprefix("torch."): peak}  # the MFU's denominator
    if cuda:  # the other rates, for reference: plain fp32 (the suite's default, TF32 off) and TF32
        peaks["float32"] = peaks.get("float32") or matmul_flops_per_second(torch.float32, size, repeats, device)
        peaks["tf32"] = matmul_flops_per_second(torch.float32, size, repeats, device, tf32=True)
        if "bfloat16" not in peaks and torch.cuda.is_bf16_supported():
            peaks["bfloat16"] = matmul_flops_per_second(torch.bfloat16, size, repeats, device)
    out = {"backbone": profile.backbone, "batch_size": profile.batch_size,
           "encoder_window_seconds": profile.encoder_window_seconds, "decoder_tokens": int(ids.shape[1]),
           "precision": precision, "matmul_size": size, "matmul_rates": peaks,
           "trainable_params": sum(p.numel() for p in params), **measured,
           "step_peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None}
    del model, method, optimiser, backbone, params
    if cuda:
        torch.cuda.empty_cache()
    return out


def run_suite(cmd: list[str], deadline: float | None, log_path: Path) -> dict:
    """Run the benchmark, echoing its output into our stdout and log_path, each line timed as it arrives (for
    each strategy's wall-clock); stop it at `deadline` (time.monotonic)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    lines: list[tuple[float, str]] = []

    def pump():
        with open(log_path, "w") as log:
            for line in proc.stdout:
                lines.append((time.monotonic() - start, line.rstrip("\n")))
                sys.stdout.write(line)
                log.write(line)
                log.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    cut = False
    try:
        proc.wait(timeout=None if deadline is None else max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        cut = True
        proc.send_signal(signal.SIGINT)  # the runner records the strategy it was in; then it is killed
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    # strategy wall-clock: from its "strategy NAME (seed S)" line to the next such line or the run's end
    marks = [(t, m.group(1)) for t, line in lines if (m := re.search(r"\] strategy (\S+) \(seed \d+\)", line))]
    end = next((t for t, line in lines if re.search(r"\] (report: |done in )", line)), time.monotonic() - start)
    wall = {name: round((marks[i + 1][0] if i + 1 < len(marks) else end) - t, 1) for i, (t, name) in enumerate(marks)}
    return {"returncode": proc.returncode, "cut_at_deadline": cut, "seconds": round(time.monotonic() - start, 1),
            "strategy_wall_clock_s": wall, "setup_s": round(marks[0][0], 1) if marks else None}


def read_run(run_dir: Path) -> dict:
    """What the run's own files say: per strategy its costs (run.json), summary measures (summary.csv) and the
    final error on every set (results.jsonl: the row after the last experience)."""
    run = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    strategies = {s["strategy"]: s for s in run.get("strategy_runs", [])}
    summary = {}
    if (run_dir / "summary.csv").exists():
        with open(run_dir / "summary.csv") as f:
            summary = {row["strategy"]: row for row in csv.DictReader(f)}
    rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()] \
        if (run_dir / "results.jsonl").exists() else []
    last = max((r["trained_through"] for r in rows), default=None)
    metric = run.get("metric", "cer")
    final: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["trained_through"] == last and r["metric"] == metric:
            final.setdefault(r["strategy"], {})[r["eval_on"]] = r["value"]
    return {"run": run, "strategies": strategies, "summary": summary, "final": final, "metric": metric}


def number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def write_summary(out: Path, data: dict) -> None:
    (out / "gpu.json").write_text(json.dumps(data, indent=1, default=str))
    m, u, r = data["machine"], data["fft_step"], data["run"]
    gpu = f"{m['gpu']} ({m['gpu_memory_gib']} GiB, {m['multiprocessors']} SMs, compute {m['capability']}, " \
          f"CUDA {m['cuda']})" if "gpu" in m else "none"
    peaks = ", ".join(f"{k} {v / 1e12:.2f} TFLOP/s" for k, v in u["matmul_rates"].items())
    lines = [
        f"# GPU benchmark: `{SCENARIO}`, profile `{data['profile']}`, device `{m['device']}`", "",
        f"- **Machine**: GPU {gpu}; CPU {m['cpu']} ({m['cpu_cores']} cores); torch {m['torch']}, "
        f"transformers {m.get('transformers')}, Python {m['python']}",
        f"- **Command**: `{data['command']}`",
        f"- **Run command**: `{data['run_command']}`",
        f"- **Started**: {data['started']}; **whole wall-clock**: {data['wall_clock_s']:.0f} s "
        f"(FFT step measurement {data['fft_step_s']:.0f} s, run {r['seconds']:.0f} s of which set-up "
        f"{r.get('setup_s') or 0:.0f} s: backbone, speech synthesis, language ID)",
        f"- **Run**: {'cut at the deadline: only the strategies below finished' if r['cut_at_deadline'] else 'complete'}"
        f" (exit code {r['returncode']}); precision `{data['precision']}`", "",
        "## FFT training step: model FLOP utilisation", "",
        f"One full fine-tuning step of `{u['backbone']}` (batch {u['batch_size']}, {u['encoder_window_seconds']:g} s "
        f"encoder window, {u['decoder_tokens']} decoder positions, {u['trainable_params']:,} trained weights) as "
        f"the suite's loop runs it: forward ({u['precision']}), backward, gradient clipping, fused AdamW.", "",
        "| FLOPs per step (counted) | seconds per step | achieved | matmul rate, same dtype | MFU |",
        "|---|---|---|---|---|",
        f"| {u['flops_per_step'] / 1e12:.3f} TFLOP | {u['seconds_per_step'] * 1e3:.1f} ms "
        f"| {u['flops_per_second'] / 1e12:.2f} TFLOP/s | {u['peak_flops_per_second'] / 1e12:.2f} TFLOP/s "
        f"| **{u['utilisation']:.1%}** |", "",
        f"Dense {u['matmul_size']}³ matmul rates measured on this device: {peaks}. FLOPs are torch's "
        "FlopCounterMode count (matrix products, convolutions, attention; not the elementwise work: norms, "
        f"GELU, softmax, AdamW); time is the mean of {u['timed_steps']} steps after {u['warmup_steps']} warm-up "
        "steps, synchronised. Log-mel extraction is outside the step.", "",
        f"## Strategies ({data['metric'].upper()}, seed 0)", "",
        "| strategy | status | wall-clock s | train s | eval s | peak memory MB | avg_error ↓ | learned_error ↓ "
        "| forgetting ↓ | base_error_delta ↓ |", "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in data["strategies"].items():
        def cell(key, fmt="{}"):
            return "–" if s.get(key) is None else fmt.format(s[key])
        lines.append(f"| {name} | {s['status']} | " + " | ".join(
            [cell("wall_clock_s"), cell("train_seconds"), cell("eval_seconds"), cell("peak_memory_mb")]
            + [cell(k, "{:.3f}") for k in ("avg_error", "learned_error", "forgetting", "base_error_delta")]) + " |")
    order = [*data["experiences"], *data["preservation"]]  # learned sets first, then the preserved ones
    sets = sorted({k for v in data["final_error"].values() for k in v},
                  key=lambda x: (order.index(x) if x in order else len(order), x))
    lines += ["", f"Peak memory: the GPU allocator's peak over the strategy's training and evaluation (the "
              "process's resident set on a CPU), from run.json. Wall-clock: from the strategy's first log line to "
              "the next strategy's (checkpoints and evaluation included).", "",
              f"### Final {data['metric'].upper()} per set (after the last experience)", "",
              "| strategy | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for name, per_set in data["final_error"].items():
        lines.append(f"| {name} | " + " | ".join(f"{per_set[x]:.3f}" if x in per_set else "–" for x in sets) + " |")
    lines += ["", f"The run's own report: `{data['run_dir']}/report.md`."]
    (out / "gpu.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="full", choices=["full", "micro", "quick", "standard"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--strategies", default=STRATEGIES, help=f"comma-separated (default {STRATEGIES})")
    ap.add_argument("--deadline-s", type=float, default=None,
                    help="stop the run this many seconds after the start, keeping what finished")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="more profile overrides for the run (run_suite.py run --set)")
    ap.add_argument("--loader-workers", type=int, default=None,
                    help="log-mel extraction in this many loader processes (default: 4 on CUDA, where extracting "
                         "30 s windows on the CPU would otherwise stall the GPU every step; 0 on a CPU, where the "
                         "workers only compete for its cores). Same batches, same results (checked on micro)")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    deadline = None if args.deadline_s is None else t0 + args.deadline_s
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    device = torch.device(args.device)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / f"{SCENARIO}-{args.profile}"

    from cl_asr.variants import parse_assignment

    print(f"[gpu] measuring the FFT step ({args.profile} profile, {device})", flush=True)
    step = fft_step_utilisation(args.profile, device, dict(parse_assignment(a, "--set") for a in args.set))
    step_s = time.monotonic() - t0
    print(f"[gpu] FFT step: {step['flops_per_step'] / 1e9:.1f} GFLOP in {step['seconds_per_step'] * 1e3:.1f} ms "
          f"= {step['flops_per_second'] / 1e12:.3f} TFLOP/s, MFU {step['utilisation']:.1%} ({step_s:.0f} s)", flush=True)

    cmd = [sys.executable, str(REPO / "run_suite.py"), "run", "--scenario", SCENARIO, "--profile", args.profile,
           "--seeds", "0", "--strategies", args.strategies, "--out", str(run_dir), "--no-progress",
           "--device", args.device, "--set", "precision=auto"]
    workers = args.loader_workers if args.loader_workers is not None else 4 if device.type == "cuda" else 0
    if workers:
        cmd += ["--set", f"loader_workers={workers}"]
    cmd += [a for s in args.set for a in ("--set", s)]
    run_deadline = None if deadline is None else deadline - REPORT_RESERVE_S
    run = run_suite(cmd, run_deadline, out / "run.log")
    if run["cut_at_deadline"] and (run_dir / "results.jsonl").exists():  # a cut run wrote no report
        subprocess.run([sys.executable, str(REPO / "run_suite.py"), "report", str(run_dir)], cwd=REPO,
                       timeout=max(10.0, REPORT_RESERVE_S - 10))
    found = read_run(run_dir)
    strategies = {}
    for name in args.strategies.split(","):
        s, row = found["strategies"].get(name, {}), found["summary"].get(name, {})
        status = "failed: " + str(s["failure"].get("kind")) if s.get("failure") else (
            "complete" if name in found["final"] else "not finished")
        strategies[name] = {"status": status, "wall_clock_s": run["strategy_wall_clock_s"].get(name),
                            **{k: s.get(k) for k in ("train_seconds", "eval_seconds", "peak_memory_mb",
                                                     "trainable_params")},
                            **{k: number(row.get(k)) for k in ("avg_error", "learned_error", "forgetting",
                                                               "base_error_delta")}}
    data = {"profile": args.profile, "started": started, "machine": machine(device),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else shlex.join(argv),
            "run_command": shlex.join(["python", "run_suite.py", *cmd[2:]]),
            "precision": step["precision"], "fft_step": step, "fft_step_s": step_s, "run": run,
            "strategies": strategies, "final_error": found["final"], "metric": found["metric"],
            "experiences": found["run"].get("experiences", []), "preservation": found["run"].get("preservation", []),
            "run_dir": run_dir.name,
            "wall_clock_s": time.monotonic() - t0}
    write_summary(out, data)
    print(f"[gpu] done in {data['wall_clock_s']:.0f} s: {out / 'gpu.md'}", flush=True)
    # 0: complete; 3: cut at the deadline (what finished is summarised); 1: the run failed
    return 0 if run["returncode"] == 0 else 3 if run["cut_at_deadline"] else 1


if __name__ == "__main__":
    sys.exit(main())
