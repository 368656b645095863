"""Whisper's own language identification, as probabilities restricted to a set of candidate languages.

Averaging probabilities (not counting top-1 votes) over utterances matters for unseen languages: Whisper's
top choice on them is often a catch-all such as th or ja (docs/whisper.md, "Unseen languages: no token of
their own"); restricted to plausible candidates
the average still ranks the related languages sensibly.
"""
from __future__ import annotations

import torch


@torch.inference_mode()
def language_probabilities(model, tokenizer, input_features: torch.Tensor, candidates: list[str]) -> dict[str, float]:
    """Mean over utterances of P(language | audio) renormalised over `candidates` (Whisper codes)."""
    if not candidates:
        raise ValueError("no candidate languages for language identification")
    ids = []
    for code in candidates:
        tok = tokenizer.convert_tokens_to_ids(f"<|{code}|>")
        if tok is None or tok == tokenizer.unk_token_id:
            raise ValueError(f"{code!r} is not a Whisper language code")
        ids.append(tok)
    sot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    device = next(model.parameters()).device
    feats = input_features.to(device)
    decoder_input_ids = torch.full((feats.shape[0], 1), sot, device=device)
    logits = model(input_features=feats, decoder_input_ids=decoder_input_ids).logits[:, -1, ids]
    probs = torch.softmax(logits.float(), dim=-1).mean(dim=0).cpu()
    return {code: float(p) for code, p in zip(candidates, probs)}


def _language_codes() -> list[str]:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return list(LANGUAGES)


LANGUAGE_CODES: list[str] = _language_codes()  # Whisper's languages, in its own order


@torch.inference_mode()
def language_distribution(model, tokenizer, input_features: torch.Tensor,
                          encoder_states: torch.Tensor | None = None) -> torch.Tensor:
    """[N, len(LANGUAGE_CODES)] P(language | audio) over all of Whisper's languages, per utterance (CPU, fp32).
    `encoder_states`: `model`'s encoder output for these features where already at hand (an encoder cache)."""
    ids = [tokenizer.convert_tokens_to_ids(f"<|{code}|>") for code in LANGUAGE_CODES]
    # Whisper before large-v3 has no <|yue|>: a language the tokenizer lacks gets probability 0.
    known = torch.tensor([i is not None and i != tokenizer.unk_token_id for i in ids])
    ids = [i if k else 0 for i, k in zip(ids, known.tolist())]
    sot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    device = next(model.parameters()).device
    feats = input_features.to(device)
    decoder_input_ids = torch.full((feats.shape[0], 1), sot, device=device)
    audio = {"input_features": feats} if encoder_states is None else {"encoder_outputs": (encoder_states.to(device),)}
    logits = model(**audio, decoder_input_ids=decoder_input_ids).logits[:, -1, ids].float().cpu()
    logits[:, ~known] = float("-inf")
    return torch.softmax(logits, dim=-1)
