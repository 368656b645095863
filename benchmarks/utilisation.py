"""How much of a device's dense matmul rate a piece of work reaches: FLOPs counted, time measured, the ratio.

    peak = matmul_flops_per_second(torch.bfloat16, device="cuda")   # the device's own dense matmul rate
    flops = count_flops(step)                                       # FLOPs torch's counter sees in step()
    u = utilisation(step, flops, peak, device="cuda")               # {"seconds": .., "flops_per_second": .., ..}

FLOPs come from torch.utils.flop_counter.FlopCounterMode, which counts matrix products, convolutions and
attention (forward and backward) and nothing elementwise: a training step's optimiser update, norms and
activations add time but no counted FLOPs, as in the usual model-FLOP utilisation (MFU). The denominator is
measured on the same device and dtype in the same process, not a datasheet figure, so the share says how close
the step comes to what this machine's matmuls actually do. Shared by benchmarks/test_speed.py (the CPU) and
benchmarks/gpu/run_gpu.py.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device) -> None:
    """Wait for queued GPU work: CUDA calls return before the kernels finish, so a timer needs this."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], device="cpu", repeats: int = 5, warmup: int = 2) -> float:
    """Mean wall-clock seconds of fn() over `repeats` calls after `warmup` untimed ones (allocator, kernel
    selection and caches settle in those)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


@contextlib.contextmanager
def _tf32(enabled: bool):
    """fp32 matmuls on TF32 tensor cores (CUDA only), restored afterwards: the suite itself leaves TF32 off."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def matmul_flops_per_second(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 5,
                            device="cpu", warmup: int = 2, tf32: bool = False) -> float:
    """Dense size x size x size matrix products per second, times 2 size^3 FLOPs each, on random normal data
    (zeros run faster on some GPUs: not a real workload). tf32: allow TF32 for fp32 on CUDA."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    with _tf32(tf32):
        seconds = seconds_per_call(lambda: torch.mm(a, b), device, repeats, warmup)
    return 2 * size ** 3 / seconds


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs that FlopCounterMode counts while fn() runs once (forward and, if fn calls it, backward)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def training_step_flops(model: torch.nn.Module, batch: dict) -> int:
    """FLOPs of one forward + backward of `model` on a batch that holds its inputs and `labels` (a collated
    Whisper batch: input_features, decoder_input_ids, labels; other keys are ignored). Gradients are cleared
    afterwards, so the model is as it was."""
    device = next(model.parameters()).device
    inputs = {k: batch[k].to(device) for k in ("input_features", "decoder_input_ids", "labels") if k in batch}

    def step():
        model(**inputs).loss.backward()

    flops = count_flops(step)
    model.zero_grad(set_to_none=True)
    return flops


def utilisation(step: Callable[[], object], flops_per_step: int, peak_flops_per_second: float, device="cpu",
                repeats: int = 5, warmup: int = 2) -> dict:
    """Time `step` (warm-up first) and relate its counted FLOPs to the peak: the share of the matmul rate."""
    seconds = seconds_per_call(step, device, repeats, warmup)
    achieved = flops_per_step / seconds
    return {"seconds_per_step": seconds, "flops_per_step": flops_per_step, "flops_per_second": achieved,
            "peak_flops_per_second": peak_flops_per_second, "utilisation": achieved / peak_flops_per_second,
            "timed_steps": repeats, "warmup_steps": warmup}
