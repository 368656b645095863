"""Whisper's own language identification, as probabilities restricted to a set of candidate languages.

Averaging probabilities (not counting top-1 votes) over utterances matters for unseen languages: Whisper's
top choice on them is often a catch-all such as th or ja (FACTS §3); restricted to plausible candidates
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
