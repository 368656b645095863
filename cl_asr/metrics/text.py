"""Text normalisation and corpus-pooled error rates.

Whisper's own normalisers (from transformers): the English one for English (numbers, contractions, spelling
variants it knows), the basic one elsewhere with diacritics KEPT (an Irish fada or an Esperanto circumflex is
part of the spelling a model must learn). Chinese is converted to Simplified script with OpenCC before
scoring (Whisper writes Traditional characters as often as not). Russian folds ё to е after the normaliser
(`FOLDS`). Errors are pooled over the corpus: sum of edits / sum of reference tokens, never a mean of
per-utterance rates (docs/metrics.md). `normalisation_notes(languages)` says what was applied to each language
(scenario.settings["normalisation"], for the report).

Metrics (`score`):
- wer, cer: word and character error rate.
- mer: mixed error rate for code-switching (SPT4ASR, arXiv 2506.21576): tokens are Chinese characters plus
  the words of any other script, (S + D + I) / N pooled. Not `jiwer.mer`, which is the *match* error rate.
- mer_<lang>: the share of `mer` on one language's part of a code-switched set. Every reference token carries
  a language (from the row's `segments` when it has them, else by script: Chinese characters are zh); after
  aligning reference and hypothesis, substitutions and deletions count for the reference token's language,
  insertions for the language of the hypothesis token (by script in a pair with Chinese, else the language
  of the nearest preceding reference token). The parts' edits sum to `mer`'s edits.
- eer: entity error rate (text-only SPT, arXiv 2412.06967): share of reference entities not found intact
  (as a whole-token sequence, after normalisation) in the hypothesis.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import json
import re

import jiwer

# name -> (higher_is_better, unit of a token)
METRICS = {"wer": (False, "word"), "cer": (False, "character"), "mer": (False, "mixed token"),
           "eer": (False, "entity")}
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Language-specific folds applied after Whisper's normaliser, to references and hypotheses alike; a language not
# named here is untouched (its scores are what they were before folds existed).
# ru: ё is optional in Russian print: the festvox-ru transcripts write it (344 times), Whisper mostly writes е.
# Numbers: the festvox-ru transcripts hold no digits (numbers are spelled out), so nothing converts numbers for
# Russian; a hypothesis that writes a number in digits counts it as an error.
FOLDS: dict[str, tuple[tuple[str, str], ...]] = {"ru": (("ё", "е"), ("Ё", "Е"))}


def metric_unit(metric: str) -> str:
    return METRICS.get(metric.split("_")[0], (False, "token"))[1]


def languages_of(language: str) -> list[str]:
    """'zh-en' -> ['zh', 'en']: a code-switched set's label names its languages, matrix language first."""
    return language.split("-") if "-" in language and not language.startswith("fy") else [language]


@lru_cache(maxsize=1)
def _to_simplified():
    import opencc

    return opencc.OpenCC("t2s")


@lru_cache(maxsize=None)
def _normalizer(language: str):
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    if language == "en":
        return EnglishTextNormalizer({})
    return BasicTextNormalizer(remove_diacritics=False, split_letters=False)


def normalize(text: str, language: str) -> str:
    langs = languages_of(language)
    out = _normalizer(langs[0] if len(langs) == 1 else "mixed")(text).strip()
    if "zh" in langs or _CJK.search(out):
        out = _to_simplified().convert(out)
    for lang in langs:
        for a, b in FOLDS.get(lang, ()):
            out = out.replace(a, b)
    return out


def normalisation_notes(languages) -> list[str]:
    """What `normalize` does to references and hypotheses of each of `languages` (set languages, e.g. "en",
    "zh-en"), one line per distinct treatment with the languages it applies to, in first-seen order, e.g.
    "ru: Whisper's basic normaliser (lower case, punctuation and symbols removed, diacritics kept), then ё folded
    to е". Recorded as scenario.settings["normalisation"] (run.json), for the report to state."""
    groups: dict[str, list[str]] = {}
    for language in dict.fromkeys(languages):
        langs = languages_of(language)
        if len(langs) == 1 and langs[0] == "en":
            what = ("Whisper's English normaliser (lower case, punctuation removed, numbers, contractions and "
                    "spellings standardised)")
        else:
            what = "Whisper's basic normaliser (lower case, punctuation and symbols removed, diacritics kept)"
        if "zh" in langs:
            what += ", then Chinese converted to Simplified script (OpenCC t2s)"
        folds = [f"{a} folded to {b}" for lang in langs for a, b in FOLDS.get(lang, ()) if a.islower()]
        if folds:
            what += ", then " + ", ".join(folds)
        groups.setdefault(what, []).append(language)
    return [f"{', '.join(langs)}: {what}" for what, langs in groups.items()]


def mixed_tokens(text: str) -> list[str]:
    """Normalised text -> Chinese characters one by one, other words whole."""
    out = []
    for word in text.split():
        out += [t for t in re.split(f"({_CJK.pattern})", word) if t.strip()]
    return out


@dataclass(frozen=True)
class ErrorCount:
    edits: int  # substitutions + deletions + insertions
    ref_tokens: int

    @property
    def rate(self) -> float:
        return self.edits / self.ref_tokens if self.ref_tokens else float("nan")


def score_utterances(refs: list[str], hyps: list[str], language: str, metrics=("wer", "cer"),
                     extras: list[dict] | None = None) -> dict[str, list[ErrorCount]]:
    """Error counts of every utterance of one evaluation cell, per requested metric (see the module
    docstring). Pooled rates are sums of these, so bootstrap resamples and per-utterance tables need nothing
    else. `extras`: per-utterance dicts with optional `segments` (JSON [[lang, text], ...]) and `entities`."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("cannot score an empty test set")
    r = [normalize(t, language) for t in refs]
    h = [normalize(t, language) for t in hyps]
    empty = [refs[i] for i, t in enumerate(r) if not t]
    if empty:
        raise ValueError(f"reference transcript(s) empty after normalisation: {empty[:3]!r}")
    extras = extras or [{} for _ in refs]
    out: dict[str, list[ErrorCount]] = {m: [] for m in metrics}
    for ref, hyp, extra, raw in zip(r, h, extras, refs):
        parts = None
        for metric in metrics:
            if metric == "wer":
                w = jiwer.process_words(ref, hyp)
                count = ErrorCount(w.substitutions + w.deletions + w.insertions, w.hits + w.substitutions + w.deletions)
            elif metric == "cer":
                c = jiwer.process_characters(ref, hyp)
                count = ErrorCount(c.substitutions + c.deletions + c.insertions, c.hits + c.substitutions + c.deletions)
            elif metric == "eer":
                count = _entity_errors([hyp], [extra], language)
            elif metric == "mer" or metric.startswith("mer_"):
                if parts is None:
                    parts = _mixed_errors([ref], [hyp], language, [extra], [raw])
                total, by_language = parts
                count = total if metric == "mer" else by_language.get(metric[4:], ErrorCount(0, 0))
            else:
                raise ValueError(f"unknown metric {metric!r}; known: wer, cer, mer, mer_<language>, eer")
            out[metric].append(count)
    return out


def score(refs: list[str], hyps: list[str], language: str, metrics=("wer", "cer"),
          extras: list[dict] | None = None) -> dict[str, ErrorCount]:
    """Pooled error counts of one evaluation cell: sums of `score_utterances` over the utterances."""
    return {m: pooled(cs) for m, cs in score_utterances(refs, hyps, language, metrics, extras).items()}


def pooled(counts: list[ErrorCount]) -> ErrorCount:
    """One cell's error count from its utterances': sums of edits and of reference tokens (never a mean of rates)."""
    return ErrorCount(sum(c.edits for c in counts), sum(c.ref_tokens for c in counts))


def error_counts(refs: list[str], hyps: list[str], language: str) -> dict[str, ErrorCount]:
    """WER and CER counts for one evaluation cell (normalised, pooled over the utterances)."""
    return score(refs, hyps, language, ("wer", "cer"))


def _token_languages(tokens: list[str], segments: str | None, language: str, raw_ref: str) -> list[str]:
    langs = languages_of(language)
    other = next((x for x in langs if x != "zh"), langs[0])
    if segments:
        tagged = []
        for lang, text in json.loads(segments):
            tagged += [lang] * len(mixed_tokens(normalize(text, language)))
        if len(tagged) == len(tokens):
            return tagged
        raise ValueError(f"segments of {raw_ref!r} give {len(tagged)} tokens, the transcript {len(tokens)}")
    return ["zh" if _CJK.fullmatch(t) else other for t in tokens]


def _mixed_errors(r, h, language, extras, raw_refs):
    langs = languages_of(language)
    total_edits = total_ref = 0
    part_edits = {x: 0 for x in langs}
    part_ref = {x: 0 for x in langs}
    for ref, hyp, extra, raw in zip(r, h, extras, raw_refs):
        rt, ht = mixed_tokens(ref), mixed_tokens(hyp)
        tags = _token_languages(rt, extra.get("segments"), language, raw)
        for t in tags:
            part_ref[t] = part_ref.get(t, 0) + 1
        total_ref += len(rt)
        if not ht:  # everything deleted
            for t in tags:
                part_edits[t] = part_edits.get(t, 0) + 1
            total_edits += len(rt)
            continue
        al = jiwer.process_words(" ".join(rt), " ".join(ht))
        for chunk in al.alignments[0]:
            if chunk.type in ("substitute", "delete"):
                for i in range(chunk.ref_start_idx, chunk.ref_end_idx):
                    part_edits[tags[i]] = part_edits.get(tags[i], 0) + 1
            if chunk.type == "insert":
                for j in range(chunk.hyp_start_idx, chunk.hyp_end_idx):
                    if "zh" in langs and len(langs) > 1:
                        lang = "zh" if _CJK.fullmatch(ht[j]) else next(x for x in langs if x != "zh")
                    else:
                        lang = tags[max(0, min(chunk.ref_start_idx - 1, len(tags) - 1))]
                    part_edits[lang] = part_edits.get(lang, 0) + 1
        total_edits += al.substitutions + al.deletions + al.insertions
    parts = {x: ErrorCount(part_edits.get(x, 0), part_ref.get(x, 0)) for x in set(part_ref) | set(part_edits)}
    return ErrorCount(total_edits, total_ref), parts


def _entity_errors(h, extras, language) -> ErrorCount:
    missed = total = 0
    for hyp, extra in zip(h, extras):
        padded = f" {' '.join(mixed_tokens(hyp))} "
        for entity in extra.get("entities") or []:
            norm = " ".join(mixed_tokens(normalize(entity, language)))
            if not norm:
                continue
            total += 1
            missed += f" {norm} " not in padded
    return ErrorCount(missed, total)
