"""Text normalisation and corpus-pooled error rates.

Whisper's own normalisers (from transformers): the English one for English (numbers, contractions, spelling
variants it knows), the basic one elsewhere with diacritics KEPT (an Irish fada or an Esperanto circumflex is
part of the spelling a model must learn). Errors are pooled over the corpus: sum of edits / sum of
reference tokens, never a mean of per-utterance rates (FACTS §8).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import jiwer

# name -> (higher_is_better, unit of a token)
METRICS = {"wer": (False, "word"), "cer": (False, "character")}


@lru_cache(maxsize=None)
def _normalizer(language: str):
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    if language == "en":
        return EnglishTextNormalizer({})
    return BasicTextNormalizer(remove_diacritics=False, split_letters=False)


def normalize(text: str, language: str) -> str:
    return _normalizer(language)(text).strip()


@dataclass(frozen=True)
class ErrorCount:
    edits: int  # substitutions + deletions + insertions
    ref_tokens: int

    @property
    def rate(self) -> float:
        return self.edits / self.ref_tokens if self.ref_tokens else float("nan")


def error_counts(refs: list[str], hyps: list[str], language: str) -> dict[str, ErrorCount]:
    """WER and CER counts for one evaluation cell (normalised, pooled over the utterances)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("cannot score an empty test set")
    r = [normalize(t, language) for t in refs]
    h = [normalize(t, language) for t in hyps]
    empty = [refs[i] for i, t in enumerate(r) if not t]
    if empty:
        raise ValueError(f"reference transcript(s) empty after normalisation: {empty[:3]!r}")
    out = {}
    w = jiwer.process_words(r, h)
    out["wer"] = ErrorCount(w.substitutions + w.deletions + w.insertions, w.hits + w.substitutions + w.deletions)
    c = jiwer.process_characters(r, h)
    out["cer"] = ErrorCount(c.substitutions + c.deletions + c.insertions, c.hits + c.substitutions + c.deletions)
    return out


def utterance_edits(ref: str, hyp: str, language: str, metric: str) -> ErrorCount:
    return error_counts([ref], [hyp], language)[metric]
