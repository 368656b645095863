"""CL-MASR's protocol for an unseen language: a new language token of its own (the variant
`[language_token=new]`, or `new_copied`), instead of borrowing the token of the language Whisper's language ID
prefers (the suite's default, `borrowed`; docs/whisper.md "Unseen languages").

Any strategy: before its `setup`, its copy of Whisper gets one decoder token per unseen language of the
scenario (an experience whose decode language is not its own): `<|eo|>`, id = the vocabulary size + k. The token
embedding and the output projection (tied in Whisper) are wrapped so that the new rows are parameters of their
own, one per language, while the pretrained matrix stays the same tensor (frozen-backbone strategies keep it
bit-identical). Initialisation: `new` draws the row from a normal with the embedding matrix's standard deviation
(CL-MASR: a random embedding); `new_copied` copies the borrowed token's row.

Training: the experience's own row trains with the strategy (`trained_rows`): frozen-backbone strategies gain
d_model trainable parameters per experience, counted as stored per experience; a strategy that trains the whole
model (FFT and its relatives) trains every row already. Decoding: the experience's sets are decoded with
`<|eo|>` (the tokenizer, shared by the run, learns the token string so that it is skipped in the output like
every special token; its id is the model's new row).
"""
from __future__ import annotations

import torch
from torch import nn

CHOICES = ("borrowed", "new", "new_copied")


class ExtendedEmbedding(nn.Module):
    """The pretrained token embedding plus new rows (ids >= the pretrained vocabulary size)."""

    def __init__(self, base: nn.Embedding, rows: nn.ParameterList):
        super().__init__()
        self.base, self.rows = base, rows
        self.padding_idx = base.padding_idx

    @property
    def weight(self) -> torch.Tensor:  # what code reading `embed_tokens.weight` (device, dtype, d_model) sees
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        v = self.base.num_embeddings
        new = ids >= v
        out = self.base(ids.masked_fill(new, 0))
        if bool(new.any()):
            table = torch.cat(list(self.rows), dim=0).to(out.dtype)
            out = out.masked_scatter(new[..., None], table[ids[new] - v])
        return out


class ExtendedProjection(nn.Module):
    """The output projection (tied to the pretrained embedding) plus a logit per new row."""

    def __init__(self, base: nn.Linear, rows: nn.ParameterList):
        super().__init__()
        self.base, self.rows = base, rows

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        table = torch.cat(list(self.rows), dim=0).to(hidden.dtype)
        return torch.cat([self.base(hidden), hidden @ table.T], dim=-1)


def unseen_languages(scenario) -> dict[str, str]:
    """language -> the code it borrows, for every experience decoded with another language's token."""
    out = {}
    for (stream, _), t in sorted(scenario.targets.items()):
        if stream in ("train", "test") and t.decode_language != t.language:
            out.setdefault(t.language, t.decode_language)
    return out


def install(model, tokenizer, borrowed: dict[str, str], init: str, seed: int) -> dict[str, int]:
    """Give `model` (a WhisperForConditionalGeneration, before any strategy wraps it) a token per language of
    `borrowed`; teach the shared tokenizer the token strings (idempotent: a resumed run calls it again).
    Returns language -> new token id."""
    if init not in CHOICES[1:]:
        raise ValueError(f"language_token must be one of {CHOICES}, got {init!r}")
    decoder = model.get_decoder()
    embed = decoder.embed_tokens
    v = embed.num_embeddings if not isinstance(embed, ExtendedEmbedding) else embed.base.num_embeddings
    ids = {lang: v + k for k, lang in enumerate(borrowed)}
    _teach_tokenizer(tokenizer, ids)
    if isinstance(embed, ExtendedEmbedding):  # a resumed method: its model has the rows already
        return ids
    weight = embed.weight.detach()
    g = torch.Generator().manual_seed(seed)
    rows = nn.ParameterList()
    for lang, code in borrowed.items():
        if init == "new":
            row = torch.randn(1, weight.shape[1], generator=g) * weight.float().std()
        else:
            row = weight[tokenizer.convert_tokens_to_ids(f"<|{code}|>")].float()[None].clone()
        rows.append(nn.Parameter(row.to(weight.dtype).to(weight.device)))
    decoder.embed_tokens = ExtendedEmbedding(embed, rows)
    model.proj_out = ExtendedProjection(model.proj_out, rows)
    generation = model.generation_config
    generation.lang_to_id = {**generation.lang_to_id, **{f"<|{lang}|>": i for lang, i in ids.items()}}
    return ids


def _teach_tokenizer(tokenizer, ids: dict[str, int]) -> None:
    missing = [f"<|{lang}|>" for lang in ids if tokenizer.convert_tokens_to_ids(f"<|{lang}|>") in (None, tokenizer.unk_token_id)]
    if missing:
        if len(tokenizer) != min(ids.values()) + len(ids) - len(missing):
            raise RuntimeError(f"the tokenizer has {len(tokenizer)} tokens, the model's vocabulary "
                               f"{min(ids.values())}: new language tokens would get other ids in each")
        tokenizer.add_tokens(missing, special_tokens=True)  # special: skipped when decoding, never split
    for lang, i in ids.items():
        got = tokenizer.convert_tokens_to_ids(f"<|{lang}|>")
        if got != i:
            raise RuntimeError(f"<|{lang}|> is token {got} in the tokenizer but row {i} in the model")


def rows_of(model) -> nn.ParameterList | None:
    embed = model.get_decoder().embed_tokens
    return embed.rows if isinstance(embed, ExtendedEmbedding) else None


def trained_row(model, new_ids: dict[str, int], language: str) -> nn.Parameter | None:
    """The row an experience in `language` trains (None: its language borrows no token)."""
    rows = rows_of(model)
    if rows is None or language not in new_ids:
        return None
    return rows[new_ids[language] - min(new_ids.values())]


def attach(method, scenario) -> None:
    """Before a strategy's `setup` (and again on resuming it): its model gets the new language tokens its config
    asks for (`language_token`), recorded on the method as `new_language_ids` (language -> token id)."""
    choice = getattr(method.config, "language_token", "borrowed")
    if choice == "borrowed":
        return
    borrowed = unseen_languages(scenario)
    if not borrowed:
        raise ValueError(f"{method.name}: language_token {choice!r} asks for a new token per unseen language, but "
                         f"every experience of scenario {scenario.name!r} is decoded with its own language's token")
    method.new_language_ids = install(method.model, method.tokenizer, borrowed, choice, seed=method.seed)


def stored_extra(method) -> int:
    """Numbers stored per experience for its new token's row, where the strategy does not store the row already
    among its trainable parameters (FFT stores the whole model, rows included)."""
    ids = getattr(method, "new_language_ids", None)
    rows = rows_of(method.model) if ids else None
    if not rows:
        return 0
    have = {id(p) for p in method.trainable_parameters()}
    return 0 if all(id(r) in have for r in rows) else rows[0].numel()


def with_new_tokens(batch: dict, method) -> dict:
    """A training batch with each row's language token replaced by its language's new one, where it has one
    (position 1: after <|startoftranscript|>, cl_asr/cl/collate.py)."""
    new_ids = getattr(method, "new_language_ids", None)
    if not new_ids or "decoder_input_ids" not in batch:
        return batch
    ids = batch["decoder_input_ids"].clone()
    for row, language in enumerate(batch["language"]):
        if language in new_ids:
            ids[row, 1] = new_ids[language]
    return {**batch, "decoder_input_ids": ids}


def trained_parameters(method, target) -> list[nn.Parameter]:
    """The method's trainable parameters, plus the new token row of the experience it trains on (`target`; None:
    not training), all rows for a joint strategy; every other row frozen meanwhile."""
    params = list(method.trainable_parameters())
    new_ids = getattr(method, "new_language_ids", None)
    if not new_ids or target is None:
        return params
    languages = list(new_ids) if method.capabilities.joint else [target.language]
    have = {id(p) for p in params}
    for row in rows_of(method.model):  # another experience's row: frozen during this one
        if id(row) not in have:
            row.requires_grad_(False)
    for language in languages:
        row = trained_row(method.model, new_ids, language)
        if row is not None and id(row) not in have:
            row.requires_grad_(True)
            params.append(row)
            have.add(id(row))
    return params
