"""How batches reach one process or several (cl_asr.distributed: `run --processes N`, data parallel).

One process: Avalanche's loop over a DataLoader whose shuffling generator is seeded per experience. Several:
every process draws the batches one process would draw (same sampler, same generator, in the same order) and
keeps its contiguous shard of each (possibly empty: it then sits out forward and backward but joins the
gradient sum); before the optimiser step, `GradientSum` replaces each process's gradients by the whole batch's
(cl_asr.distributed.sum_gradients: each process's weighted by its share of the batch's labelled tokens).
Evaluation batches are the one-process batches dealt round-robin; cl_asr/cl/decoding.py gathers the results.
"""
from __future__ import annotations

import numpy as np
import torch
from avalanche.core import SupervisedPlugin
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from .. import distributed
from .collate import IGNORE


class _ShardedBatches:
    """The batches one process would draw, in the same order, each cut to this process's contiguous shard."""

    def __init__(self, batches: BatchSampler, processes: distributed.Processes):
        self.batches, self.processes = batches, processes

    def __iter__(self):
        for batch in self.batches:
            yield np.array_split(batch, self.processes.world)[self.processes.rank].tolist()

    def __len__(self) -> int:
        return len(self.batches)


class _EmptyIsNone:
    """Collate a shard; an empty one is None (this process sits the step out)."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, rows):
        return self.collate(rows) if rows else None


class GradientSum(SupervisedPlugin, supports_distributed=True):
    """Before the optimiser step: the whole batch's gradient on every process, or a skip everywhere."""

    def before_update(self, strategy, **kwargs):
        strategy.skip_update = distributed.sum_gradients(strategy.trained_parameters(),
                                                         strategy.labelled_tokens, strategy.skip_update)


class DataParallel:
    """The loaders and the epoch loop of ASRTemplate (a mixin), for one process or several."""

    labelled_tokens = 0  # labelled tokens of this process's shard of the current batch

    def data_parallel_plugins(self) -> list:
        return [GradientSum()] if self.processes is not None else []

    def _loader_options(self) -> dict:
        workers = self.loader_workers
        return {"num_workers": workers, "persistent_workers": False, "pin_memory": self.device.type == "cuda",
                **({"prefetch_factor": 4} if workers else {})}

    def make_train_dataloader(self, shuffle=True, **kwargs):
        g = torch.Generator().manual_seed(self.seed * 7919 + self.experience.current_experience)
        if self.processes is None:
            self.dataloader = DataLoader(self.adapted_dataset, batch_size=self.train_mb_size, shuffle=shuffle,
                                         generator=g, collate_fn=self.collator, **self._loader_options())
            return
        batches = BatchSampler(RandomSampler(self.adapted_dataset, generator=g), self.train_mb_size, False)
        # generator=g too: the loader draws its workers' base seed from it first, as the one-process loader does
        self.dataloader = DataLoader(self.adapted_dataset, batch_sampler=_ShardedBatches(batches, self.processes),
                                     generator=g, collate_fn=_EmptyIsNone(self.collator), **self._loader_options())

    def make_eval_dataloader(self, **kwargs):
        if self.processes is None:
            self.dataloader = DataLoader(self.adapted_dataset, batch_size=self.eval_mb_size, shuffle=False,
                                         collate_fn=self.collator, **self._loader_options())
            return
        batches = list(BatchSampler(range(len(self.adapted_dataset)), self.eval_mb_size, False))
        self._eval_batch_numbers = list(range(self.processes.rank, len(batches), self.processes.world))
        self.dataloader = DataLoader(self.adapted_dataset, batch_sampler=[batches[i] for i in self._eval_batch_numbers],
                                     collate_fn=self.collator, **self._loader_options())

    def training_epoch(self, **kwargs):
        """Avalanche's loop (SGDUpdate.training_epoch); with several processes, one whose shard of a batch is
        empty sits out forward and backward but joins the gradient sum (GradientSum, before the update)."""
        if self.processes is None:
            return super().training_epoch(**kwargs)
        for self.mbatch in self.dataloader:
            if self._stop_training:
                break
            here = self.mbatch is not None
            self.labelled_tokens = 0
            if here:
                self._unpack_minibatch()
                self.labelled_tokens = int((self.mbatch["labels"] != IGNORE).sum())
            self._before_training_iteration(**kwargs)
            self.optimizer.zero_grad()
            self.loss = self._make_empty_loss()
            if here:
                self._before_forward(**kwargs)
                self.mb_output = self.forward()
                self._after_forward(**kwargs)
                self.loss += self.criterion()
                self._before_backward(**kwargs)
                self.backward()
                self._after_backward(**kwargs)
            self._before_update(**kwargs)
            self.optimizer_step()
            self._after_update(**kwargs)
            self._after_training_iteration(**kwargs)
