"""Evaluation: batched greedy decoding of every set of a pass, with the run-wide decode memo.

`Decoding` is the evaluation half of `ASRTemplate` (cl_asr/cl/template.py): Avalanche's `eval(stream)` loop
calls `eval_epoch` once per set. A set whose decode is already in the memo under an equal key
(cl_asr/cl/decode_key.py: the plain model, or the strategy's whole state) is reused; sets that one model decodes
alike are decoded together in shared batches (`decode_sets_together`); otherwise the set is decoded batch by
batch, each batch split into the groups its route gives (per-utterance routing). With several processes the
batches are dealt round-robin and the hypotheses gathered (cl_asr/cl/data_parallel.py deals them).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessorList
from transformers.modeling_outputs import BaseModelOutput

from .. import distributed
from ..core import Target
from ..methods.base import Method, lent_encoder_cache
from .decode_key import decode_key


class _IrrelevantGenerateWarnings(logging.Filter):
    """Every decode here caps max_new_tokens, while Whisper's generate always fills in a max_length too:
    transformers then warns on every batch that both are set. Drop exactly that message.

    Two more, each printed once per process, are about Whisper's own generate internals and do not apply:
    it passes suppress tokens alongside its generation config itself, and our decoder inputs are never
    padded (every row shares the same prefix), which is what the attention-mask warning guards against."""

    IRRELEVANT = ("seem to have been set", "together with generation-related arguments",
                  "The attention mask is not set with a batched input")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in self.IRRELEVANT)


logging.getLogger("transformers.generation.utils").addFilter(_IrrelevantGenerateWarnings())


@dataclass
class EvalOutput:
    target: Target
    ids: list[str]
    refs: list[str]
    hyps: list[str]
    seconds: float
    reused: bool  # True when an identical decode (same model state, same set) was already computed
    shareable: bool  # keyed by the plain model (equal across strategies), not by the strategy's own state
    routes: list[str | None]  # parameter set chosen per utterance (None = plain backbone)
    oracle_route: str | None  # the set the experience identity picks: routing is right where routes equal it

    @property
    def target_key(self) -> tuple[str, int]:
        return self.target.stream, self.target.index

    @property
    def routing_accuracy(self) -> float:
        return sum(r == self.oracle_route for r in self.routes) / max(1, len(self.routes))


class DecodeMemo:
    """Decodes (ids, references, hypotheses) keyed by everything that determines them (cl_asr/cl/decode_key.py);
    a plain backbone's outputs are computed once per run however many strategies and rows need them (e.g.
    base-language sets under prompt methods). `enabled=False` computes everything (run_suite.py --no-cache)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._store: dict[tuple, tuple] = {}

    def get(self, key: tuple):
        return self._store.get(key) if self.enabled else None

    def put(self, key: tuple, value: tuple) -> None:
        if self.enabled:
            self._store[key] = value


class Decoding:
    """The evaluation methods of ASRTemplate (a mixin: it uses the template's method, collator, memo, ...)."""

    def cached_encoder_states(self, feats: torch.Tensor) -> torch.Tensor | None:
        if self.encoder_cache is None:
            return None
        with self.autocast():
            return self.encoder_cache.encode(self.model, feats)

    def conditioning(self, batch: dict) -> dict | None:
        """The batch columns the method conditions on per utterance (its `capabilities.conditioning`)."""
        columns = self.method.capabilities.conditioning
        return {c: batch.get(c) for c in columns} if columns else None

    def memo_key(self, target: Target) -> tuple:
        return self.memo_key_and_shareable(target)[0]

    def memo_key_and_shareable(self, target: Target) -> tuple[tuple, bool]:
        key, shareable = decode_key(self.method, target, self._digests)
        fusion = self.fusion_for(target)
        # the set by its name as well as its place: with --orders, (test, 0) is another set in another order;
        # a fused decode by its LM and weight (a plain-model key alone would not tell it from an unfused one)
        fused = () if fusion is None else (("lm", fusion.lm.digest, fusion.weight),)
        return (*self.memo_context, target.stream, target.index, target.name, target.decode_language,
                self.max_new_tokens, key, *fused), shareable

    def decode_language_of(self, target: Target) -> str:
        """The language `generate` is given: the scenario's decode language, or the language's own new token
        (`language_token: new`, cl_asr/cl/language_tokens.py), which Whisper's generate takes as `<|xx|>`."""
        new_ids = getattr(self.method, "new_language_ids", None)
        return f"<|{target.language}|>" if new_ids and target.language in new_ids else target.decode_language

    # -- shallow fusion with an experience's n-gram LM (cl_asr/cl/lm_fusion.py) -----------------------------
    def learn_fusion_lm(self, rows: list[dict], index: int) -> None:
        """Experience `index`'s transcripts' LM, kept on the method (checkpointed with it, and seen by the decode
        memo's key of the strategy's state): learned before training on the experience and used once it is
        trained; a strategy that trains nothing (zero_shot) learns it where it would have trained (runner)."""
        config = self.method.config
        if getattr(config, "lm_weight", 0.0) <= 0:
            return
        from .lm_fusion import train_lm

        lms = self.method.__dict__.setdefault("fusion_lms", {})  # only when fusing: others' state is unchanged
        lms[index] = train_lm(self.method.tokenizer, [r["text"] for r in rows], config.lm_order)

    def fusion_for(self, target: Target):
        """The ShallowFusion that decodes `target`, or None: an experience's test set once that experience is
        trained (or, for a strategy that trains nothing, once its text has been read), with its own LM (the
        experience identity picks it); never a preservation set."""
        weight = getattr(self.method.config, "lm_weight", 0.0)
        lm = getattr(self.method, "fusion_lms", {}).get(target.index) if weight > 0 and target.stream == "test" \
            else None
        if lm is None or (self.method.capabilities.trains and target.index >= self.method.experiences_trained):
            return None
        from .lm_fusion import ShallowFusion

        return ShallowFusion(lm, weight)

    def _before_eval(self, **kwargs):
        super()._before_eval(**kwargs)
        if self.processes is not None:  # the decode memo's keys hold a digest of the model state: equal everywhere
            keys = [self.memo_key(self.target_of(e)) for e in self.current_eval_stream]
            if any(theirs != keys for theirs in distributed.gather_objects(keys)):
                raise RuntimeError(f"{self.method.name}: the processes' models differ at an evaluation pass; they must "
                                   "stay equal after every step (cl_asr.distributed): a bug, please report it")
        self._decoded_together = self.decode_sets_together(list(self.current_eval_stream))

    def decode_sets_together(self, experiences: list) -> dict[tuple, tuple]:
        """One model decodes every set alike (no per-set prompt or routing: FFT, zero-shot, replay, ...): decode
        the sets of an evaluation pass that are not memoised in shared batches of `eval_mb_size` rows, each row
        with its own language token. Batches of one set are as small as the set; decoding steps are bound by
        reading the weights, so a batch of 72 rows costs about as much as one of 12 (measured: 6 x 12 rows took
        2.0x as long as 1 x 72). Rows are sorted by audio length so a batch's rows end at similar steps."""
        m = type(self.method)
        if m.route is not Method.route or m.route_batch is not Method.route_batch or m.capabilities.conditioning \
                or len(experiences) < 2 or getattr(self.method.config, "lm_weight", 0.0) > 0:
            return {}  # (shallow fusion: each set has its own LM, or none)
        pending = []  # (key, target, rows)
        for exp in experiences:
            target = self.target_of(exp)
            key = self.memo_key(target)
            if self.memo.get(key) is None and not any(k == key for k, _, _ in pending):
                data = exp.dataset
                pending.append((key, target, [data[i] for i in range(len(data))]))
        if len(pending) < 2 or any("audio" not in row for _, _, rows in pending for row in rows):
            return {}
        start = time.perf_counter()
        flat = [(j, row) for j, (_, _, rows) in enumerate(pending) for row in rows]
        order = sorted(range(len(flat)), key=lambda i: -len(flat[i][1]["audio"]["array"]))
        hyps: list[str] = [""] * len(flat)
        firsts = list(range(0, len(order), self.eval_mb_size))
        if self.processes is not None:  # batches dealt round-robin; hypotheses gathered below
            firsts = firsts[self.processes.rank::self.processes.world]
        bar = tqdm(firsts, desc=f"decode {self.method.name} {len(pending)} sets",
                   unit="batch", disable=not self.progress, leave=False)
        for first in bar:
            chosen = order[first: first + self.eval_mb_size]
            batch = self.collator([flat[i][1] for i in chosen])
            feats = batch["input_features"].to(self.device)
            languages = [self.decode_language_of(pending[flat[i][0]][1]) for i in chosen]
            with self.autocast(), torch.inference_mode():
                out = self.model.generate(**self._audio_inputs(feats), language=languages, task="transcribe",
                                          max_new_tokens=self.max_new_tokens)
            for i, text in zip(chosen, self.method.tokenizer.batch_decode(out, skip_special_tokens=True)):
                hyps[i] = text
        if self.processes is not None:
            for part, theirs in enumerate(distributed.gather_objects(hyps)):
                for first in range(part * self.eval_mb_size, len(order), self.processes.world * self.eval_mb_size):
                    for i in order[first: first + self.eval_mb_size]:
                        hyps[i] = theirs[i]
        seconds = (time.perf_counter() - start) / len(flat)
        decoded, at = {}, 0
        for key, target, rows in pending:
            n = len(rows)
            decoded[key] = ([r["id"] for r in rows], [r["text"] for r in rows], hyps[at: at + n], [None] * n, None,
                            seconds * n)
            at += n
        return decoded

    def _audio_inputs(self, feats: torch.Tensor) -> dict:
        """What `generate` gets for the audio: cached encoder outputs where the encoder may be cached."""
        states = self.cached_encoder_states(feats)
        if states is None:
            return {"input_features": feats}
        return {"encoder_outputs": BaseModelOutput(last_hidden_state=states)}

    def eval_epoch(self, **kwargs):
        target = self.target
        key, shareable = self.memo_key_and_shareable(target)
        start = time.perf_counter()
        cached = self.memo.get(key)
        together = self._decoded_together.pop(key, None)
        if together is not None:  # decoded in this pass's shared batches: computed here, not reused
            ids, refs, hyps, routes, oracle, seconds = together
            self.memo.put(key, (ids, refs, hyps, routes, oracle))
            self.eval_outputs[(target.stream, target.index)] = EvalOutput(
                target, list(ids), list(refs), list(hyps), seconds, False, shareable, list(routes), oracle)
            return
        if cached is None:
            ids, refs, hyps, routes, oracle = [], [], [], [], None
            bar = tqdm(self.dataloader, desc=f"decode {self.method.name} {target.stream}/{target.name}",
                       unit="batch", disable=not self.progress, leave=False)
            decoded = []  # (batch number, ids, refs, hypotheses, routes, oracle)
            for number, self.mbatch in enumerate(bar):
                self._unpack_minibatch()
                decoded.append((number, self.mbatch["id"], self.mbatch["text"], *self.decode_batch(target)))
            if self.processes is not None:  # every process decoded its share of the batches: gather them all
                mine = [(self._eval_batch_numbers[n], *rest) for n, *rest in decoded]  # numbered as in one process
                decoded = sorted((piece for part in distributed.gather_objects(mine) for piece in part),
                                 key=lambda piece: piece[0])
            for _, batch_ids, batch_refs, batch_hyps, batch_routes, oracle in decoded:
                ids += batch_ids
                refs += batch_refs
                hyps += batch_hyps
                routes += batch_routes
            self.memo.put(key, (ids, refs, hyps, routes, oracle))
        else:
            ids, refs, hyps, routes, oracle = cached
        self.eval_outputs[(target.stream, target.index)] = EvalOutput(
            target, list(ids), list(refs), list(hyps), time.perf_counter() - start, cached is not None,
            shareable, list(routes), oracle,
        )

    def routed_groups(self, target: Target, feats: torch.Tensor) -> list:
        """The method's route groups for this batch, with the encoder cache lent to its routing passes (methods/
        base.py lent_encoder_cache). Outside autocast, as routing always ran: the cache keys by autocast state."""
        lent = lent_encoder_cache.set(None if self.encoder_cache is None else self.encoder_cache.encode)
        try:
            return self.method.route_batch(target, feats, self.conditioning(self.mbatch))
        finally:
            lent_encoder_cache.reset(lent)

    @torch.inference_mode()
    def decode_batch(self, target: Target) -> tuple[list[str], list[str | None], str | None]:
        """Greedy decoding of the current batch: (hypotheses, set chosen per row, the oracle's set)."""
        tok = self.method.tokenizer
        feats = self.mbatch["input_features"]
        hyps: list[str] = [""] * feats.shape[0]
        routes: list[str | None] = [None] * feats.shape[0]
        oracle = None
        fusion = self.fusion_for(target)
        extra = {} if fusion is None else {"logits_processor": LogitsProcessorList([fusion])}
        for group in self.routed_groups(target, feats):
            oracle = group.oracle
            with group.route as route, self.autocast():
                prompt_ids = torch.tensor(route.decoder_prefix, device=self.device) if route.decoder_prefix else None
                out = self.model.generate(
                    **self._audio_inputs(feats[group.rows]),
                    language=self.decode_language_of(target),
                    task="transcribe",
                    max_new_tokens=self.max_new_tokens,
                    prompt_ids=prompt_ids,
                    **extra,
                )
            for row, text, chosen in zip(group.rows, tok.batch_decode(out, skip_special_tokens=True), group.chosen):
                hyps[row], routes[row] = text, chosen
        return hyps, routes, oracle
