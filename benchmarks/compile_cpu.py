"""Does torch.compile (or bf16 autocast) speed up a whisper-base FFT training step on this CPU, with the same
results? Issue 21 item 3: keep a setting only if it is faster with identical results.

    python benchmarks/compile_cpu.py [--steps 6] [--out reports/speed/compile_cpu.json]

Three copies of the real whisper-base (10 s window, as the profiles use) start from the same weights and take
the same training steps (batch 4, AdamW, the suite's fused optimiser), one after the other in each round so that
whatever else the machine runs slows all three alike:
- eager fp32 (what the suite does),
- `torch.compile(model)` fp32 (inductor, default mode; its compile time reported apart, steps after it timed),
- eager under bf16 autocast (the suite's `precision: bf16`).
Printed: seconds per step of each, the ratio to eager, and the largest difference in loss from eager at each
step (0 means identical). Batches repeat one decoder length so the compiled graph is built once; the suite's
batches vary in transcript length, which would recompile (or need dynamic shapes), so this is its best case.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

WINDOW = 10


def batches(backbone, n_batches: int, batch: int = 4):
    from cl_asr.cl.collate import ASRCollator
    from cl_asr.data.corpus import CorpusSpec, synthesize_corpus
    from cl_asr.data.text_bank import load_sentences
    from cl_asr.data.tts import Voice

    sentences = tuple(load_sentences("eo")[: n_batches * batch])
    data = synthesize_corpus(CorpusSpec("bench/eo", "eo", sentences, (Voice("eo", "m1", 140, 45),)), progress=False)
    collate = ASRCollator(backbone.tokenizer, backbone.feature_extractor, {"eo": "es"})
    out = []
    for i in range(n_batches):
        b = collate([data[j] for j in range(i * batch, (i + 1) * batch)])
        width = 40  # one decoder length for every batch: a compiled graph is built once
        ids, labels = b["decoder_input_ids"][:, :width], b["labels"][:, :width]
        pad = width - ids.shape[1]
        if pad > 0:
            ids = torch.cat([ids, ids.new_full((ids.shape[0], pad), 50257)], 1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], pad), -100)], 1)
        out.append({"input_features": b["input_features"], "decoder_input_ids": ids, "labels": labels})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from cl_asr.backbones import load_backbone
    from cl_asr.backbones.window import set_encoder_window, window_feature_extractor

    torch.manual_seed(0)
    backbone = load_backbone("offline:whisper-base")
    set_encoder_window(backbone.model, WINDOW)
    backbone.feature_extractor = window_feature_extractor(backbone.feature_extractor, WINDOW)
    data = batches(backbone, args.steps)
    models = {name: copy.deepcopy(backbone.model).train() for name in ("eager", "compiled", "bf16")}
    for m in models.values():  # dropout off: the three must take the same steps
        m.config.dropout = m.config.attention_dropout = m.config.activation_dropout = 0.0
    optimisers = {n: torch.optim.AdamW(m.parameters(), lr=3e-5, fused=True) for n, m in models.items()}
    forward = {"eager": models["eager"], "compiled": torch.compile(models["compiled"]), "bf16": models["bf16"]}

    def step(name, batch):
        optimisers[name].zero_grad(set_to_none=True)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if name == "bf16" else torch.autocast("cpu", enabled=False)
        with ctx:
            loss = forward[name](**batch).loss
        loss.backward()
        optimisers[name].step()
        return float(loss.detach())

    t0 = time.perf_counter()
    first = {n: step(n, data[0]) for n in ("compiled",)}
    compile_seconds = time.perf_counter() - t0  # the compiled step's first call: graph capture + C++ build
    first["eager"], first["bf16"] = step("eager", data[0]), step("bf16", data[0])
    losses = {n: [first[n]] for n in forward}
    seconds = {n: 0.0 for n in forward}
    for batch in data[1:]:
        for name in forward:
            t = time.perf_counter()
            losses[name].append(step(name, batch))
            seconds[name] += time.perf_counter() - t
    timed = len(data) - 1
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__, "timed_steps": timed, "compile_seconds": round(compile_seconds, 1),
        "seconds_per_step": {n: round(s / timed, 3) for n, s in seconds.items()},
        "speed_vs_eager": {n: round(seconds["eager"] / s, 3) for n, s in seconds.items()},
        "losses": losses,
        "max_loss_difference_vs_eager": {n: max(abs(a - b) for a, b in zip(losses["eager"], losses[n]))
                                         for n in forward},
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
