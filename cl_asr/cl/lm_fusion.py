"""Decoding-time shallow fusion with an n-gram language model of an experience's text (any strategy, as the
variant `[lm_weight=W]`; cl_asr/methods/base.py MethodConfig.lm_weight / lm_order).

Shallow fusion (Gulcehre et al. 2015; Kannan et al. 2018) adds a weighted external LM score to the decoder's
at every greedy step: score(w) = log P_whisper(w | audio, prefix) + lm_weight * log P_lm(w | previous tokens).
The LM is a token n-gram over Whisper's own BPE tokens (so no second tokeniser: its context is the hypothesis'
text tokens so far, its vocabulary Whisper's text tokens plus <|endoftext|> as end of sentence) with
interpolated absolute discounting (Ney et al. 1994; D = 0.75), trained on the training transcripts of one
experience. A test set is fused with its own experience's LM once that experience has been trained (its text
has been seen; the experience identity picks the LM, as oracle routing picks a parameter set); preservation
sets and not-yet-learned experiences decode without fusion. Whisper's special tokens other than
<|endoftext|> get the LM's floor probability (they are suppressed or forced by Whisper's generate anyway).

Why hand-written: KenLM does not install from the package registries on these machines without a compiler
toolchain and NLTK's `lm` scores one word at a time (the vocabulary is 51865 tokens per step); the model here
is ~60 lines, vectorised over the vocabulary, and tested against hand-computed probabilities
(tests/test_lm_fusion.py).
"""
from __future__ import annotations

import hashlib
import math
from collections import defaultdict

import torch
from transformers import LogitsProcessor

DISCOUNT = 0.75


class NGramLM:
    """Token n-gram with interpolated absolute discounting over `vocab_size` ids; `eos` ends each sentence.

    Slots, no __dict__: the decode memo's walk over a strategy's state skips it (thousands of n-gram counts),
    because a fused decode's memo key holds the LM's `digest` itself (cl_asr/cl/decoding.py memo_key)."""

    __slots__ = ("order", "vocab_size", "eos", "counts", "digest", "_unigram")

    def __init__(self, sentences: list[list[int]], order: int, vocab_size: int, eos: int):
        if order < 1:
            raise ValueError(f"lm_order must be at least 1, got {order}")
        self.order, self.vocab_size, self.eos = order, vocab_size, eos
        # counts[k][context of length k] -> {next token: count}
        self.counts: list[dict[tuple, dict[int, int]]] = [defaultdict(lambda: defaultdict(int)) for _ in range(order)]
        for sentence in sentences:
            tokens = list(sentence) + [eos]
            for i, w in enumerate(tokens):
                for k in range(order):
                    if i - k < 0:
                        break
                    self.counts[k][tuple(tokens[i - k: i])][w] += 1
        self.counts = [{h: dict(nxt) for h, nxt in level.items()} for level in self.counts]
        h = hashlib.blake2b(digest_size=12)
        h.update(repr((order, vocab_size, eos, DISCOUNT, [list(x) for x in sentences])).encode())
        self.digest = h.hexdigest()  # what the decode memo keys a fused decode by: the sentences and settings
        self._unigram = self._level(torch.full((vocab_size,), 1.0 / vocab_size, dtype=torch.float64), ())

    def _level(self, lower: torch.Tensor, context: tuple) -> torch.Tensor:
        """P(. | context) from the lower order's distribution: discounted counts plus the freed mass x lower."""
        nxt = self.counts[len(context)].get(context)
        if not nxt:
            return lower
        total = sum(nxt.values())
        out = lower * (DISCOUNT * len(nxt) / total)
        ids = torch.tensor(list(nxt), dtype=torch.long)
        out[ids] += (torch.tensor(list(nxt.values()), dtype=torch.float64) - DISCOUNT) / total
        return out

    def distribution(self, history: list[int]) -> torch.Tensor:
        """[vocab_size] P(next token | the last order-1 tokens of `history`) (float64, sums to 1)."""
        p = self._unigram
        for k in range(1, self.order):
            if len(history) < k:
                break
            p = self._level(p.clone(), tuple(history[len(history) - k:]))
        return p

    def log_prob(self, sentence: list[int]) -> float:
        tokens = list(sentence) + [self.eos]
        return sum(math.log(float(self.distribution(tokens[:i])[w])) for i, w in enumerate(tokens))


def train_lm(tokenizer, texts: list[str], order: int) -> NGramLM:
    """The LM of an experience's transcripts, tokenised exactly as the training labels are (cl_asr/cl/collate.py)."""
    sentences = [tokenizer.encode(" " + t.strip(), add_special_tokens=False) for t in texts]
    return NGramLM(sentences, order, vocab_size=tokenizer.eos_token_id + 1, eos=tokenizer.eos_token_id)


class ShallowFusion(LogitsProcessor):
    """Adds `weight` x log P_lm to Whisper's log-probabilities; the LM's context is each row's text so far (the
    tokens after its last special token: Whisper's forced prefix and any prompt come before)."""

    def __init__(self, lm: NGramLM, weight: float):
        self.lm, self.weight = lm, weight

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        text_limit = self.lm.eos  # ids below <|endoftext|> are text tokens
        logp = torch.log_softmax(scores.float(), dim=-1)
        fused = torch.full_like(logp, 0.0)
        for row in range(input_ids.shape[0]):
            ids = input_ids[row].tolist()
            start = max((i + 1 for i, t in enumerate(ids) if t >= text_limit), default=0)
            p = self.lm.distribution(ids[start:])
            bonus = torch.full((scores.shape[-1],), math.log(float(p[:text_limit].min())), dtype=torch.float64)
            n = min(len(p), scores.shape[-1])
            bonus[:n] = torch.log(p[:n])
            fused[row] = bonus.to(fused.dtype)
        return (logp + self.weight * fused).to(scores.dtype)
