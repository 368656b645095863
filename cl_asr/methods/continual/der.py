"""der: full fine-tuning with Dark Experience Replay++ (DER++, Buzzega et al. 2020) on sequence-to-sequence batches:
a buffer of past utterances with their labels and the model's logits at storage time; the loss is

    CE(current batch) + alpha * MSE(logits on a buffer sample, stored logits) + beta * CE(another sample's labels)

(the DER++ objective of Buzzega et al. 2020; two independent buffer samples, as the authors' code, aimagelab/mammoth
models/derpp.py, draws them). What is stored follows CL-MASR's DER on Whisper (speechbrain/benchmarks,
benchmarks/CL_MASR/whisper/train_der.py): per learned experience a share of its utterances (`memory_ratio`, their
`replay_ratio`), with the logits of the model as trained on that experience, every decoder position teacher-forced
with the reference transcript. CL-MASR's DER has no beta term; DER++ adds it.

Logits are kept only at the labelled positions (the transcript tokens and the end token: the positions the loss
covers), over the whole vocabulary, in float16 by default (`logits_dtype`), on the CPU: the buffer's memory is
utterances x labelled tokens x vocabulary x 2 bytes (whisper-base: about 2 MB per 20-token utterance, under 10 MB per
quick-profile experience). No Avalanche plugin implements DER; the buffer keeps dataset rows, which the template's
collator turns into batches, as replay's buffer does."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin

from ...cl.collate import IGNORE
from ..base import MethodConfig, register_method
from ..fft import FullFineTuning
from .agem import by_modality, memory_size


@dataclass
class DERConfig(MethodConfig):
    alpha: float = field(default=1.0, metadata={"help": "weight of the MSE between the logits on buffer utterances "
                                                        "and their stored logits", "search": {"log_factor": 10}})
    beta: float = field(default=0.5, metadata={"help": "weight of the cross-entropy on buffer utterances' labels "
                                                       "(DER++; 0 gives DER)", "search": {"log_factor": 10}})
    memory_ratio: float = field(
        default=0.1, metadata={"help": "utterances stored per learned experience, with their logits, as a share of its "
                                       "training set (at least one)"})
    replay_batch: int = field(default=0, metadata={"help": "buffer utterances per sample, one sample per term "
                                                           "(0: the training batch size)"})
    logits_dtype: Literal["float16", "float32"] = field(
        default="float16", metadata={"help": "precision the stored logits are kept in (float16 halves the buffer)"})

    def __post_init__(self):
        super().__post_init__()
        if self.alpha < 0 or self.beta < 0 or not 0 < self.memory_ratio <= 1 or self.replay_batch < 0:
            raise ValueError(f"alpha and beta must be >= 0, memory_ratio in (0, 1], replay_batch >= 0; got "
                             f"{self.alpha}, {self.beta}, {self.memory_ratio}, {self.replay_batch}")


def logits_at_labels(strategy, batch: dict, autocast: bool = True) -> torch.Tensor:
    """The model's logits [K, vocab] at the K labelled positions of a collated batch (row after row, position after
    position), teacher-forced; a text-only batch attends to the method's stand-in for audio, as in training.
    These strategies fine-tune the plain model (no route, no decoder prefix)."""
    model, device = strategy.model, strategy.device
    ids, labels = batch["decoder_input_ids"].to(device), batch["labels"].to(device)
    if batch["input_features"] is None:
        w = model.model.decoder.embed_tokens.weight
        inputs = {"encoder_outputs": (strategy.method.text_only_encoder_states(ids.shape[0], w.device, w.dtype),)}
    else:
        inputs = {"input_features": batch["input_features"].to(device)}
    with strategy.autocast() if autocast else torch.autocast(device.type, enabled=False):
        hidden = model.model(**inputs, decoder_input_ids=ids).last_hidden_state
        return model.proj_out(hidden[labels != IGNORE]).float()


def per_row(strategy, rows: Sequence[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(logits [k_i, vocab], labels [k_i]) of each row, in the rows' order (one batch per modality)."""
    out: list = [None] * len(rows)
    for group in by_modality(rows):
        batch = strategy.collator([rows[i] for i in group])
        where = batch["labels"] != IGNORE
        logits = logits_at_labels(strategy, batch).split(where.sum(dim=1).tolist())
        for i, row_logits, row_labels, row_where in zip(group, logits, batch["labels"], where):
            out[i] = (row_logits, row_labels[row_where].to(row_logits.device))
    return out


class DERPlugin(SupervisedPlugin, supports_distributed=True):
    """The buffer (rows, stored logits), its two terms added to the loss before backward, and the storing of
    each learned experience's share with the model's logits when its training ends. Every process draws the same
    samples (seeded by the method's seed, experience and iteration), so the summed gradient is the one-process one."""

    def __init__(self, method: "DER"):
        super().__init__()
        self.method = method
        self.buffer: list[tuple[dict, torch.Tensor]] = []  # (row, logits at its labelled positions [k, vocab])

    def sample(self, strategy, term: str) -> list[tuple[dict, torch.Tensor]]:
        n = min(len(self.buffer), self.method.config.replay_batch or strategy.train_mb_size)
        rng = random.Random(f"{self.method.seed}:der-{term}:{self.method.experiences_trained}:"
                            f"{strategy.clock.train_exp_iterations}")
        return [self.buffer[i] for i in sorted(rng.sample(range(len(self.buffer)), n))]

    def terms(self, strategy) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(MSE to the stored logits on one buffer sample, CE on another's labels); None where its weight is 0."""
        cfg, mse, ce = self.method.config, None, None
        if cfg.alpha > 0:
            entries = self.sample(strategy, "logits")
            now = torch.cat([logits for logits, _ in per_row(strategy, [row for row, _ in entries])])
            stored = torch.cat([logits for _, logits in entries]).to(now.device, torch.float32)
            mse = F.mse_loss(now, stored)
        if cfg.beta > 0:
            pairs = per_row(strategy, [row for row, _ in self.sample(strategy, "labels")])
            ce = F.cross_entropy(torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]))
        return mse, ce

    def before_backward(self, strategy, **kwargs):
        if not self.buffer:
            return
        mse, ce = self.terms(strategy)
        if mse is not None:
            strategy.loss = strategy.loss + self.method.config.alpha * mse
        if ce is not None:
            strategy.loss = strategy.loss + self.method.config.beta * ce

    @torch.no_grad()
    def after_training_exp(self, strategy, **kwargs):
        data = strategy.experience.dataset
        index = self.method.experiences_trained  # already counted: the template ends the method's experience first
        rng = random.Random(f"{self.method.seed}:der-memory:{index}")
        rows = [data[i] for i in sorted(rng.sample(range(len(data)), memory_size(self.method.config.memory_ratio,
                                                                                   len(data))))]
        dtype = getattr(torch, self.method.config.logits_dtype)
        training = strategy.model.training
        strategy.model.eval()
        try:
            for start in range(0, len(rows), strategy.train_mb_size):
                chunk = rows[start: start + strategy.train_mb_size]
                for row, (logits, _) in zip(chunk, per_row(strategy, chunk)):
                    self.buffer.append((row, logits.to("cpu", dtype)))
        finally:
            strategy.model.train(training)


@register_method("der")
class DER(FullFineTuning):
    description = ("full fine-tuning with DER++: replay of past utterances with their stored logits (MSE) and labels "
                   "(cross-entropy)")
    config_class = DERConfig

    def setup(self) -> None:
        super().setup()
        self.der = DERPlugin(self)

    def plugins(self):
        return [self.der]

    def info(self) -> dict:
        values = sum(logits.numel() for _, logits in self.der.buffer)
        return {"buffer_utterances": len(self.der.buffer), "stored_logit_values": values,
                "stored_logit_bytes": sum(logits.numel() * logits.element_size() for _, logits in self.der.buffer)}
