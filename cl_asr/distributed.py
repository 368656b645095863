"""One job across several processes (one per GPU): data parallelism through torch.distributed.

`run_suite.py run ... --processes N` starts N copies of the run with torchrun (torch.distributed.run); each
process finds its rank in the environment torchrun sets, joins the process group (NCCL on GPUs, gloo on CPUs)
and takes the GPU of its local rank. Every process runs the same program with the same random numbers: the
same backbone, scenario, strategies, data order and optimiser. What is divided is the work:

* training: each global mini-batch (the profile's batch_size, exactly as one process would draw it) is cut into
  N contiguous shards; each process runs forward and backward on its shard, and the gradients are summed over
  processes, each weighted by its share of the batch's labelled tokens. The loss is a mean over labelled
  tokens, so the summed gradient is the one-process gradient of the whole batch (up to float rounding), and
  every process takes the same optimiser step: parameters stay equal everywhere. Terms that do not depend on
  the batch (EWC's penalty) come out with weight 1, since the shares add up to 1.
* evaluation: the batches of each set are dealt round-robin to the processes and the hypotheses gathered, so
  every process ends up with every decode (same batches as one process, so the same hypotheses).
* files: only the main process (rank 0) writes results, predictions, checkpoints, run.json and the report.

Why not DistributedDataParallel: the strategies route batches through hooks and cached encoder outputs and call
sub-modules directly (no single forward to wrap), some parameters get no gradient on some processes (prompt
sets of other experiences), and evaluation needs no wrapper. The gradient sum is what DDP's reducer does, in
buckets, once per step.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist

BUCKET_ELEMENTS = 1 << 25  # gradients summed in flat buckets of up to 32M elements (128 MB in fp32)


@dataclass(frozen=True)
class Processes:
    rank: int
    world: int
    local_rank: int
    backend: str

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


_current: Processes | None = None


def launched_world_size() -> int:
    """How many processes torchrun started for this job (1 when not started by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_environment(device: str | None = None) -> Processes | None:
    """Join the process group torchrun prepared; None (and nothing to do) for a one-process run."""
    global _current
    if launched_world_size() <= 1:
        return None
    if _current is not None:
        return _current
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={launched_world_size()} is set but not {', '.join(missing)}: start the processes "
                         "with `run_suite.py run --processes N` or torchrun, which set them all")
    wants_cpu = device is not None and torch.device(device).type == "cpu"
    backend = "nccl" if torch.cuda.is_available() and not wants_cpu else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"process {local_rank} of {launched_world_size()} has no GPU: this machine has "
                               f"{torch.cuda.device_count()}; start at most that many processes per machine")
        torch.cuda.set_device(local_rank)
    _die_with_launcher()
    if not dist.is_initialized():
        # device_id: NCCL binds this process to its GPU at once (barriers then never guess the device)
        dist.init_process_group(backend=backend, **({"device_id": torch.device("cuda", local_rank)}
                                                     if backend == "nccl" else {}))
    _current = Processes(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    return _current


def _die_with_launcher() -> None:
    """A launcher killed outright (SIGKILL, OOM killer) cannot stop its processes, which would then wait in a
    collective for peers that never come: ask Linux to kill this process when its parent dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc: the collectives' timeouts end them instead
        return


def current() -> Processes | None:
    return _current


def is_main() -> bool:
    return _current is None or _current.main


def barrier() -> None:
    if _current is not None:
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """The main process does the block first (e.g. synthesising and caching the scenario's audio), the others
    after it, reading what it cached."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def gather_objects(obj) -> list:
    """Every process's `obj`, in rank order, on every process."""
    if _current is None:
        return [obj]
    out = [None] * _current.world
    dist.all_gather_object(out, obj)
    return out


def sum_gradients(params: list[torch.Tensor], labelled: int, skip: bool) -> bool:
    """Replace each process's gradients of `params` by the sum over processes of (its share of the batch's
    labelled tokens) x (its gradient). Returns True when any process must skip the step (a non-finite loss):
    then nobody updates. A parameter with a gradient nowhere stays without one (the optimiser leaves it alone,
    as it would in one process); with a gradient somewhere, missing ones count as zeros."""
    device = params[0].device
    # one small collective: [labelled tokens, skip, has a gradient per parameter], summed
    flags = torch.tensor([labelled, int(skip), *(p.grad is not None for p in params)], dtype=torch.float64,
                         device=device)
    dist.all_reduce(flags)
    total, skipping, anywhere = flags[0].item(), flags[1].item() > 0, flags[2:].tolist()
    if skipping:
        return True
    weight = labelled / total if total > 0 else 0.0
    grads = []
    for p, present in zip(params, anywhere):
        if not present:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        else:
            p.grad.mul_(weight)
        grads.append(p.grad)
    for bucket in _buckets(grads):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        at = 0
        for g in bucket:
            g.copy_(flat[at: at + g.numel()].view_as(g))
            at += g.numel()
    return False


def _buckets(grads: list[torch.Tensor]):
    bucket, size = [], 0
    for g in grads:
        if bucket and (size + g.numel() > BUCKET_ELEMENTS or g.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(g)
        size += g.numel()
    if bucket:
        yield bucket


def shutdown() -> None:
    global _current
    if _current is not None and dist.is_initialized():
        dist.destroy_process_group()
    _current = None
