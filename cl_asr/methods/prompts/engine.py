"""The soft-prompt family for Whisper, injected with hooks so that `generate(input_features=...)` keeps working.

peft's PromptTuning does not support Whisper (it requires `input_ids`; docs/whisper.md, "Whisper inside
transformers 5.x: pitfalls"), so prompts go in through hooks at *sites*:
- `input`: L*2 learned log-mel frames prepended to the input features (the window's last L*2 frames, padding
  for utterances shorter than the window, drop out); the convolutions turn them into L encoder positions.
- `encoder.k`: at the input of encoder layer k. At the first encoder site L vectors are prepended to the
  sequence (after the convolutions and positional embeddings); at later sites (deep prompts) those L
  positions are overwritten by the layer's own prompt, as in P-tuning v2. The decoder's cross-attention
  sees the L prompt positions too.
- `decoder.0`: the decoder input becomes <|startofprev|> P_1..P_L <|startoftranscript|> <|lang|> ..., each P_i a
  placeholder token whose embedding a hook on `embed_tokens` replaces by a prompt vector; `generate` takes the
  prefix as `prompt_ids`, and with the KV cache later steps never see a placeholder again.
- `decoder.k` (k >= 1): the hidden states at the placeholder positions are overwritten at the input of
  decoder layer k (deep prompts).
Base-language sets are decoded with no prompt at all: the hooks are removed while nothing is active.

One engine serves every variant; each registered strategy is one file in this folder whose config is
`SoftPromptConfig` with its own defaults: sites (encoder_layers / decoder_layers / input_frames), residual
reparameterisation (ResPT) and language conditioning (LPT). Reparameterised or language-conditioned prompts are folded into plain prompts after
their experience, so what is stored per experience is always L x d per site.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Sequence

import torch
from torch import nn

from ...core import HiddenStatesPreHook, Route, Target
from ..base import SetRoutedConfig, SetRoutedMethod, freeze

PLACEHOLDER_TOKEN = "<|startoflm|>"  # never produced by Whisper's decoding; only marks prompt positions
PREV_TOKEN = "<|startofprev|>"
# Whisper's feature extractor maps digital silence to log10(1e-10) = -10, clamps and rescales: (-10 + 4) / 4.
SILENCE_LOG_MEL = -1.5


def silence_log_mel(encoder: nn.Module) -> torch.Tensor:
    """A whole encoder window of digital silence as log-mel input [1, n_mels, 2 x positions]."""
    w = encoder.conv1.weight
    return torch.full((1, w.shape[1], 2 * encoder.embed_positions.num_embeddings), SILENCE_LOG_MEL,
                      device=w.device, dtype=w.dtype)


def parse_layers(spec: str, n_layers: int, field_name: str) -> list[int]:
    """'none' | 'first' | 'all' | 'last:K' | '0,3,5' -> sorted layer indices."""
    spec = str(spec).strip()
    if spec == "none":
        return []
    if spec == "first":
        return [0]
    if spec == "all":
        return list(range(n_layers))
    try:
        if spec.startswith("last:"):
            k = int(spec[5:])
            if not 1 <= k <= n_layers:
                raise ValueError
            return list(range(n_layers - k, n_layers))
        layers = sorted({int(x) for x in spec.split(",")})
    except ValueError:
        raise ValueError(
            f"{field_name}: {spec!r} is not one of none, first, all, last:K (1..{n_layers}) or a list like 0,3,5"
        ) from None
    if layers[0] < 0 or layers[-1] >= n_layers:
        raise ValueError(f"{field_name}: layers {layers} outside 0..{n_layers - 1}")
    return layers


class PromptInjector:
    """The hooks for a list of sites; `active` maps a site to its prompt ([L, d] or [B, L, d]). The hooks are
    on the model only while a prompt set is active: with none active the backbone is exactly the pretrained
    model, which is what lets the caches and the decode memo share its work with other strategies (they check
    the modules, cl_asr/cl/fingerprint.py). Layer hooks replace hidden states only (`HiddenStatesPreHook`)."""

    def __init__(self, model: nn.Module, tokenizer, sites: Sequence[str]):
        self.placeholder_id = tokenizer.convert_tokens_to_ids(PLACEHOLDER_TOKEN)
        self.prev_id = tokenizer.convert_tokens_to_ids(PREV_TOKEN)
        self.sites = list(sites)
        self._active: dict[str, torch.Tensor] | None = None
        self._decoder_mask: torch.Tensor | None = None
        whisper = model.model
        enc_layers = sorted(int(s.split(".")[1]) for s in self.sites if s.startswith("encoder."))
        dec_layers = sorted(int(s.split(".")[1]) for s in self.sites if s.startswith("decoder."))
        self.has_decoder = bool(dec_layers)
        self._hooks: list[tuple[nn.Module, str, object]] = []  # (module, "pre" | "post", hook)
        if "input" in self.sites:
            self._hooks.append((whisper.encoder, "pre", self._prepend_frames))
        for k in enc_layers:
            hook = HiddenStatesPreHook(self._make_encoder_hook(f"encoder.{k}", prepend=(k == enc_layers[0])))
            self._hooks.append((whisper.encoder.layers[k], "pre", hook))
        if dec_layers:
            self._hooks.append((whisper.decoder.embed_tokens, "post", self._embed_hook))
        for k in dec_layers:
            if k > 0:
                self._hooks.append((whisper.decoder.layers[k], "pre",
                                    HiddenStatesPreHook(self._make_decoder_hook(f"decoder.{k}"))))
        self._handles: list = []

    @property
    def active(self) -> dict[str, torch.Tensor] | None:
        return self._active

    @active.setter
    def active(self, prompts: dict[str, torch.Tensor] | None) -> None:
        """Activate prompts (installing the hooks) or, with None, deactivate them (removing the hooks)."""
        self._active = prompts
        if prompts is not None and not self._handles:
            self._handles = [m.register_forward_pre_hook(h, with_kwargs=True) if kind == "pre"
                             else m.register_forward_hook(h) for m, kind, h in self._hooks]
        elif prompts is None:
            self.remove()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._decoder_mask = None

    def decoder_prefix(self, length: int) -> list[int]:
        if not self.has_decoder or self.active is None:
            return []
        return [self.prev_id] + [self.placeholder_id] * length

    def _get(self, site: str) -> torch.Tensor | None:
        return None if self.active is None else self.active.get(site)

    @staticmethod
    def _batched(prompt: torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
        prompt = prompt.to(device=like.device, dtype=like.dtype)
        return prompt.unsqueeze(0).expand(batch, -1, -1) if prompt.dim() == 2 else prompt

    def _prepend_frames(self, module, args, kwargs):
        prompt = self._get("input")
        if prompt is None:
            return None
        feats = args[0] if args else kwargs["input_features"]
        frames = self._batched(prompt, feats.shape[0], feats).transpose(1, 2)  # [B, n_mels, 2L]
        shifted = torch.cat([frames, feats[..., : feats.shape[-1] - frames.shape[-1]]], dim=-1)
        if args:
            return (shifted, *args[1:]), kwargs
        return args, {**kwargs, "input_features": shifted}

    def _make_encoder_hook(self, site: str, prepend: bool):
        def hook(hidden):
            prompt = self._get(site)
            if prompt is None:
                return None
            p = self._batched(prompt, hidden.shape[0], hidden)
            if prepend:
                return torch.cat([p, hidden], dim=1)
            return torch.cat([p, hidden[:, p.shape[1]:]], dim=1)

        return hook

    def _embed_hook(self, module, args, output):
        if self.active is None:
            self._decoder_mask = None
            return None
        mask = args[0] == self.placeholder_id
        if not bool(mask.any()):
            self._decoder_mask = None  # a cached decoding step: the prompt is already in the KV cache
            return None
        self._decoder_mask = mask
        prompt = self._get("decoder.0")
        return None if prompt is None else self._scatter(output, mask, prompt)

    def _make_decoder_hook(self, site: str):
        def hook(hidden):
            prompt, mask = self._get(site), self._decoder_mask
            if prompt is None or mask is None:
                return None
            return self._scatter(hidden, mask, prompt)

        return hook

    def _scatter(self, hidden: torch.Tensor, mask: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        length = prompt.shape[-2]
        counts = mask.sum(dim=1)
        if bool((counts != length).any()):
            raise RuntimeError(f"decoder prompt of length {length}, but rows carry {counts.tolist()} placeholders")
        p = self._batched(prompt, hidden.shape[0], hidden)
        # masked_scatter fills the True positions row by row, in order: row b gets prompt[b, 0..L-1].
        return hidden.masked_scatter(mask.unsqueeze(-1), p)


class ResidualMLP(nn.Module):
    """x + up(relu(down(x))) (ResPT, Razdaibiedina et al. 2023); `up` starts at zero, so the reparameterised
    prompt starts exactly at its initialisation."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.down, self.up = nn.Linear(d, hidden), nn.Linear(hidden, d)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.relu(self.down(x)))


class PromptSet(nn.Module):
    """The prompts of one experience (or of all, in shared mode): a raw [L, d] matrix per site, optionally
    reparameterised through residual MLPs and shifted by a language-conditioned vector."""

    def __init__(self, raw: dict[str, torch.Tensor], reparameterization: str = "none", reparam_hidden: int = 0,
                 language: torch.Tensor | None = None, language_hidden: int = 0):
        super().__init__()
        self.raw = nn.ParameterDict({site.replace(".", "_"): nn.Parameter(t) for site, t in raw.items()})
        self.sites = list(raw)
        self.mlps = nn.ModuleDict()
        if reparameterization == "per_site":
            for site, t in raw.items():
                self.mlps[site.replace(".", "_")] = ResidualMLP(t.shape[-1], reparam_hidden)
        elif reparameterization == "shared":
            dims = {t.shape[-1] for t in raw.values()}
            if len(dims) != 1:
                raise ValueError(f"reparameterization 'shared' needs one prompt width at every site, got {dims}")
            self.mlps["shared"] = ResidualMLP(dims.pop(), reparam_hidden)
        self.language = nn.Parameter(language) if language is not None else None
        self.language_mlps = nn.ModuleDict()
        if language is not None:  # LPT: a language encoder per site turns the language embedding into a shift
            for site, t in raw.items():
                mlp = nn.Sequential(nn.Linear(language.shape[-1], language_hidden), nn.Tanh(),
                                    nn.Linear(language_hidden, t.shape[-1]))
                nn.init.zeros_(mlp[2].weight)
                nn.init.zeros_(mlp[2].bias)
                self.language_mlps[site.replace(".", "_")] = mlp

    def materialise(self) -> dict[str, torch.Tensor]:
        out = {}
        for site in self.sites:
            key = site.replace(".", "_")
            p = self.raw[key]
            if key in self.mlps or "shared" in self.mlps:
                p = self.mlps[key if key in self.mlps else "shared"](p)
            if self.language is not None:
                p = p + self.language_mlps[key](self.language)
            out[site] = p
        return out

    def folded(self) -> "PromptSet":
        """Plain prompts equal to what this set produces (after training, the MLPs are no longer needed)."""
        with torch.no_grad():
            return PromptSet({s: t.detach().clone() for s, t in self.materialise().items()})

    def stored_size(self) -> int:
        return sum(p.numel() for p in self.raw.values())


@dataclass
class SoftPromptConfig(SetRoutedConfig):
    prompt_length: int = field(default=32, metadata={"help": "number of prompt vectors at each site (L)",
                                                     "search": {"choices": [8, 16, 32, 64, 128]}})
    input_frames: bool = field(
        default=False, metadata={"help": "learn L*2 log-mel frames prepended to the encoder input (vanilla SPT)"})
    encoder_layers: str = field(
        default="none",
        metadata={"help": "encoder layers whose input gets prompts: none, first (Entire SPT), all (deep), "
                  "last:K (Wav2Seq prompting's last encoder layers) or a list like 0,3,5"})
    decoder_layers: str = field(default="none", metadata={"help": "decoder layers with prompts, same syntax"})
    reparameterization: Literal["none", "shared", "per_site"] = field(
        default="none",
        metadata={"help": "ResPT: produce each prompt through a residual MLP, one MLP shared by all sites or one "
                  "per site (TS-Whisper: the shared MLP hurt); folded into plain prompts after the experience"})
    reparam_hidden: int = field(default=128, metadata={"help": "hidden width of the ResPT MLP"})
    language_conditioning: bool = field(
        default=False,
        metadata={"help": "LPT: a language embedding (initialised from Whisper's embedding of the language "
                  "token the experience is decoded with) passes through a small per-site language encoder "
                  "whose output is added to every prompt vector"})
    language_hidden: int = field(default=64, metadata={"help": "hidden width of the LPT language encoder"})
    init: Literal["transcripts", "vocab"] = field(
        default="transcripts",
        metadata={"help": "decoder prompt initialisation: embeddings of the experience's own training "
                  "transcripts (like a text prompt of the new language), or of random text tokens"})
    encoder_init: Literal["silence", "gaussian"] = field(
        default="silence",
        metadata={"help": "encoder prompt initialisation: the encoder's own representation of silence (the "
                  "padding frames it learned to ignore, so an untrained prompt changes almost nothing), or "
                  "Gaussian noise at the positional embeddings' scale (which wrecks the untrained model)"})

    def decoder_prefix_positions(self) -> int:
        # <|startofprev|> + one placeholder per prompt vector (PromptInjector.decoder_prefix)
        return 1 + self.prompt_length if self.decoder_layers != "none" else 0

    def __post_init__(self):
        super().__post_init__()
        if self.prompt_length < 1:
            raise ValueError(f"prompt_length must be at least 1, got {self.prompt_length}")
        if not self.input_frames and self.encoder_layers == "none" and self.decoder_layers == "none":
            raise ValueError("a prompt method needs at least one site: input_frames, encoder_layers or decoder_layers")


class SoftPromptMethod(SetRoutedMethod):
    """Frozen backbone + prompt sets at the configured sites; a set chosen per experience (oracle or LID)."""

    config_class = SoftPromptConfig
    freezes_backbone: ClassVar[bool] = True

    def setup(self) -> None:
        if self.freezes_backbone:
            freeze(self.model)
        cfg, wcfg = self.config, self.model.model.config
        self.sites = (["input"] if cfg.input_frames else []) + \
            [f"encoder.{k}" for k in parse_layers(cfg.encoder_layers, wcfg.encoder_layers, "encoder_layers")] + \
            [f"decoder.{k}" for k in parse_layers(cfg.decoder_layers, wcfg.decoder_layers, "decoder_layers")]
        self.injector = PromptInjector(self.model, self.tokenizer, self.sites)
        self.prompt_sets = nn.ModuleDict()
        self._training_key: str | None = None

    def extra_modules(self):
        return [self.prompt_sets]

    def text_only_problem(self) -> str | None:
        if not any(s.startswith("decoder.") for s in self.sites):
            return (f"{self.name} has prompts on the audio side only (sites: {', '.join(self.sites)}), and a text-only "
                    "experience has no audio to learn them from")
        return None

    def site_width(self, site: str) -> int:
        return self.model.model.config.num_mel_bins if site == "input" else self.model.model.config.d_model

    def site_rows(self, site: str) -> int:
        return 2 * self.config.prompt_length if site == "input" else self.config.prompt_length

    # -- prompt sets -----------------------------------------------------------------------------------
    def _new_prompt_set(self, target: Target, texts: Sequence[str]) -> PromptSet:
        """Decoder prompts start as token embeddings: of the experience's training transcripts (`init:
        transcripts`; Whisper conditions strongly on <|startofprev|> text, so the prompt starts out as a text
        prompt in the new language) or of random text tokens (`init: vocab`, Lester et al.). Encoder prompts
        start as silence (`encoder_init: silence`; measured on eo: CER 0.50 untouched, 0.98 with Gaussian
        prompts before any training) or as Gaussian noise; input frames start as silent log-mel frames."""
        cfg, L = self.config, self.config.prompt_length
        g = torch.Generator().manual_seed(self.seed * 1000 + target.index)
        whisper = self.model.model
        dev = next(self.model.parameters()).device
        raw: dict[str, torch.Tensor] = {}
        silence = None
        for site in self.sites:
            if site == "input":
                raw[site] = torch.full((2 * L, self.site_width(site)), SILENCE_LOG_MEL)
            elif site.startswith("encoder."):
                if cfg.encoder_init == "silence":
                    if silence is None:
                        silence = self._silence_hidden(L, max(int(s.split(".")[1]) for s in self.sites
                                                              if s.startswith("encoder.")))
                    raw[site] = silence[int(site.split(".")[1])].clone()
                else:
                    scale = whisper.encoder.embed_positions.weight.detach().float().std().item()
                    raw[site] = torch.randn(L, whisper.config.d_model, generator=g) * scale
            else:
                k = int(site.split(".")[1])
                ids = self._init_token_ids(texts, L, g)
                emb = whisper.decoder.embed_tokens.weight.detach().cpu()[ids].clone().float()
                # deeper decoder sites start from the frozen decoder's own hidden states for those tokens
                raw[site] = emb if k == 0 else self._decoder_hidden(ids, k)
        language = None
        if cfg.language_conditioning:
            tok = self.tokenizer.convert_tokens_to_ids(f"<|{target.decode_language}|>")
            language = whisper.decoder.embed_tokens.weight.detach().cpu()[tok].clone().float()
        return PromptSet(raw, cfg.reparameterization, cfg.reparam_hidden, language, cfg.language_hidden).to(dev)

    @torch.no_grad()
    def _silence_hidden(self, length: int, last_layer: int) -> list[torch.Tensor]:
        """Input of encoder layers 0..last_layer for a window of digital silence, at the window's last positions
        (so an untrained encoder prompt looks like the padding the encoder learned to ignore)."""
        enc = self.model.model.encoder
        positions = enc.embed_positions.num_embeddings
        if length > positions:
            raise ValueError(f"prompt_length {length} exceeds the encoder's {positions} positions")
        mel = silence_log_mel(enc)
        x = torch.nn.functional.gelu(enc.conv2(torch.nn.functional.gelu(enc.conv1(mel)))).permute(0, 2, 1)
        x = x + enc.embed_positions.weight
        out = []
        for k in range(last_layer + 1):
            out.append(x[0, -length:].detach().float().cpu().clone())
            if k < last_layer:
                x = enc.layers[k](x, attention_mask=None)
                x = x[0] if isinstance(x, tuple) else x
        return out

    @torch.no_grad()
    def _decoder_hidden(self, ids: torch.Tensor, layer: int) -> torch.Tensor:
        dec = self.model.model.decoder
        dev = dec.embed_tokens.weight.device
        out = dec(input_ids=ids.unsqueeze(0).to(dev), output_hidden_states=True, use_cache=False)
        return out.hidden_states[layer][0].detach().float().cpu().clone()

    def _init_token_ids(self, texts: Sequence[str], length: int, g: torch.Generator) -> torch.Tensor:
        n_text = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")  # ids below it are text tokens
        if self.config.init == "vocab" or not texts:
            return torch.randint(0, n_text, (length,), generator=g)
        order = torch.randperm(len(texts), generator=g).tolist()
        ids: list[int] = []
        for i in order:
            ids += self.tokenizer.encode(" " + str(texts[i]).strip(), add_special_tokens=False)
            if len(ids) >= length:
                break
        ids = (ids * (length // max(1, len(ids)) + 1))[:length]  # cycle if the transcripts are short
        return torch.tensor(ids, dtype=torch.long)

    def before_experience(self, target: Target, rows: Sequence[dict] = ()) -> None:
        key = self.set_key(target.index)
        if key not in self.prompt_sets:
            self.prompt_sets[key] = self._new_prompt_set(target, [r["text"] for r in rows])
        self._training_key = key
        self.record_routing_profile(target.index, rows)

    def after_experience(self, target: Target) -> None:
        key = self._training_key
        if self.config.mode == "separate" and key is not None:
            self.prompt_sets[key] = self.prompt_sets[key].folded()  # MLPs done: keep only L x d per site
        self._training_key = None

    def trainable_parameters(self):
        if self._training_key is None:
            return []
        return list(self.prompt_sets[self._training_key].parameters())

    def stored_parameters_per_experience(self) -> int:
        if self.config.mode == "shared" and self.prompt_sets:
            # the shared set (with its MLPs, if any) is what a checkpoint after each experience must hold
            return sum(p.numel() for p in self.prompt_sets["shared"].parameters())
        return sum(self.site_rows(s) * self.site_width(s) for s in self.sites)

    # -- routing ---------------------------------------------------------------------------------------
    def _set_exists(self, key: str) -> bool:
        return key in self.prompt_sets

    @contextmanager
    def activate(self, key: str | None, conditioning: dict | None = None):
        ps = self.prompt_sets[key] if key is not None else None
        self.injector.active = ps.materialise() if ps is not None else None
        try:
            yield Route(decoder_prefix=self.injector.decoder_prefix(self.config.prompt_length))
        finally:
            self.injector.active = None


def default(base: type, name: str, value):
    """A dataclass field of `base` with another default and the same help text (for a variant's config)."""
    return field(default=value, metadata=base.__dataclass_fields__[name].metadata)
