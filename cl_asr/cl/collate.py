"""Turn dataset rows into model batches: log-mel features, decoder inputs and labels.

Decoder input:  <|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|> t_1 .. t_n
Labels:           -100                -100        -100          t_1          t_2 .. <|endoftext|>
so the loss covers the transcript tokens and the end token only. The language token is the one the
scenario decodes that language with (a scenario setting, identical for every strategy). Text is tokenised
with a leading space, as Whisper writes its own transcripts.

Text-only rows (no `audio`: text-only domain adaptation) give `input_features` None; rows with a speaker
`enrolment` embedding (target-speaker ASR) pass it on as a [B, D] tensor.
"""
from __future__ import annotations

import numpy as np
import torch

IGNORE = -100


class ASRCollator:
    def __init__(self, tokenizer, feature_extractor, decode_language: dict[str, str]):
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.decode_language = decode_language
        self.max_seconds = feature_extractor.chunk_length
        self.sampling_rate = feature_extractor.sampling_rate
        t = tokenizer.convert_tokens_to_ids
        self.sot, self.transcribe, self.no_ts = t("<|startoftranscript|>"), t("<|transcribe|>"), t("<|notimestamps|>")
        self.eot = t("<|endoftext|>")

    def language_token(self, language: str) -> int:
        code = self.decode_language.get(language, language)
        tok = self.tokenizer.convert_tokens_to_ids(f"<|{code}|>")
        if tok is None or tok == self.tokenizer.unk_token_id:
            raise ValueError(f"language {language!r} is decoded as {code!r}, which is not a Whisper language")
        return tok

    def __call__(self, rows: list[dict]) -> dict:
        with_audio = ["audio" in r for r in rows]
        if any(with_audio) and not all(with_audio):
            raise ValueError(f"a batch mixes rows with and without audio: {[r['id'] for r in rows][:4]}")
        feats = self._features(rows) if all(with_audio) else None
        ids, labels = [], []
        for r in rows:
            text = self.tokenizer.encode(" " + r["text"].strip(), add_special_tokens=False)
            prefix = [self.sot, self.language_token(r["language"]), self.transcribe, self.no_ts]
            ids.append(prefix + text)
            labels.append([IGNORE] * (len(prefix) - 1) + text + [self.eot])
        width = max(map(len, ids))
        dec = torch.full((len(rows), width), self.eot, dtype=torch.long)
        lab = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for i, (a, b) in enumerate(zip(ids, labels)):
            dec[i, : len(a)] = torch.tensor(a)
            lab[i, : len(b)] = torch.tensor(b)
        batch = {
            "input_features": feats,
            "decoder_input_ids": dec,
            "labels": lab,
            "id": [r["id"] for r in rows],
            "text": [r["text"] for r in rows],
            "language": [r["language"] for r in rows],
        }
        if "enrolment" in rows[0]:
            batch["enrolment"] = torch.tensor(np.stack([np.asarray(r["enrolment"], dtype=np.float32) for r in rows]))
        return batch

    def _features(self, rows: list[dict]) -> torch.Tensor:
        audios = []
        for r in rows:
            audio = np.asarray(r["audio"]["array"], dtype=np.float32)
            if r["audio"]["sampling_rate"] != self.sampling_rate:
                raise ValueError(f"{r['id']}: sampling rate {r['audio']['sampling_rate']}, expected {self.sampling_rate}")
            if len(audio) > self.max_seconds * self.sampling_rate:
                raise ValueError(
                    f"{r['id']}: {len(audio) / self.sampling_rate:.2f} s of audio does not fit the "
                    f"{self.max_seconds:g} s encoder window (raise encoder_window_seconds, at most 30)"
                )
            audios.append(audio)
        return self.feature_extractor(audios, sampling_rate=self.sampling_rate, return_tensors="pt").input_features


def with_prefix(decoder_input_ids: torch.Tensor, labels: torch.Tensor, prefix: list[int]):
    """Insert a method's decoder prefix (e.g. <|startofprev|> + prompt placeholders) before the SOT token."""
    if not prefix:
        return decoder_input_ids, labels
    b = decoder_input_ids.shape[0]
    p = torch.tensor(prefix, dtype=torch.long, device=decoder_input_ids.device).expand(b, -1)
    ignore = torch.full_like(p, IGNORE)
    return torch.cat([p, decoder_input_ids], dim=1), torch.cat([ignore, labels], dim=1)
