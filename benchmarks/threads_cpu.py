"""Two suite jobs on one small CPU: should each keep torch's default thread count or use one thread?

    python benchmarks/threads_cpu.py [--steps 6] [--jobs 2] [--out reports/speed/threads_cpu.json]

Long benchmark runs are often run side by side (a tuning search and a headline run). torch gives every process as
many threads as the machine has cores, so two jobs on 2 cores run 4 busy threads whose OpenMP barriers spin
against each other. This measures it directly: JOBS processes at once, each taking the same whisper-base-sized
FFT training steps (random weights, batch 4, 30 s window, AdamW), first with torch's default thread count, then
with OMP_NUM_THREADS=1 each. Printed: the wall time of each round and their ratio (> 1: one thread each is faster
in total). The two rounds run one after the other on an otherwise idle machine; run nothing else meanwhile.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

STEP = r"""
import sys, time, torch
from transformers import WhisperConfig, WhisperForConditionalGeneration
torch.manual_seed(0)
# whisper-base's shape (random weights: the speed of a step does not depend on them, and no download is needed)
cfg = WhisperConfig(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                    decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, vocab_size=51865)
model = WhisperForConditionalGeneration(cfg)
opt = torch.optim.AdamW(model.parameters(), 1e-5)
x, y = torch.randn(4, 80, 3000), torch.randint(0, 50000, (4, 30))
for _ in range(int(sys.argv[1])):
    model(input_features=x, labels=y).loss.backward(); opt.step(); opt.zero_grad()
print(torch.get_num_threads())
"""


def round_seconds(jobs: int, steps: int, threads: int | None) -> tuple[float, list[int]]:
    """Wall time for JOBS processes started together to finish STEPS steps each, and the threads each used."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", STEP, str(steps)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(jobs)]
    used = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"threads_cpu: a job failed (exit {proc.returncode})")
        used.append(int(out.strip().splitlines()[-1]))
    return time.perf_counter() - start, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    default_s, default_threads = round_seconds(args.jobs, args.steps, None)
    one_s, one_threads = round_seconds(args.jobs, args.steps, 1)
    result = {"jobs": args.jobs, "steps_per_job": args.steps, "cpu_count": os.cpu_count(),
              "machine": platform.processor() or platform.machine(),
              "default_threads_per_job": default_threads, "default_seconds": round(default_s, 1),
              "one_thread_seconds": round(one_s, 1), "one_thread_speedup": round(default_s / one_s, 2)}
    print(f"{args.jobs} jobs x {args.steps} FFT steps on {os.cpu_count()} cores: "
          f"{default_threads[0]} threads each {default_s:.1f} s, 1 thread each {one_s:.1f} s "
          f"-> one thread each is {default_s / one_s:.2f}x")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
