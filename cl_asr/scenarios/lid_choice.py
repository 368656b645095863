"""The language token an unseen language is decoded with, chosen by Whisper's own language ID:
the candidate with the highest mean probability over the first utterances of its training set (docs/whisper.md,
"Unseen languages: no token of their own"). Shared by the
scenario builders whose decode language may be `auto`."""
from __future__ import annotations

from ..backbones.lid import language_probabilities


def choose_decode_language(backbone, feature_extractor, dataset, n_utterances: int,
                           candidates: list[str]) -> tuple[str, dict[str, float]]:
    """Return (chosen Whisper code, {candidate: mean probability, rounded, highest first}) measured on the
    first `n_utterances` rows of `dataset` (rows with audio {array at 16 kHz})."""
    rows = dataset.select(range(min(n_utterances, len(dataset))))
    feats = feature_extractor(
        [r["audio"]["array"] for r in rows], sampling_rate=16_000, return_tensors="pt"
    ).input_features
    probs = language_probabilities(backbone.model, backbone.tokenizer, feats, candidates)
    ranked = {k: round(v, 4) for k, v in sorted(probs.items(), key=lambda kv: -kv[1])}
    return max(probs, key=probs.get), ranked
