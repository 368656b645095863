"""The strategy interface. A strategy is one class in one file:

    @register_method("my_method")
    class MyMethod(Method):
        description = "one line shown by `run_suite.py list`"
        config_class = MyConfig          # a dataclass; defaults in baselines/my_method.yaml

        def setup(self): ...             # freeze / wrap the backbone, install hooks
        def trainable_parameters(self): ...
        def stored_parameters_per_experience(self): ...

Optional: `before_experience(target, rows)` / `after_experience` (e.g. create a prompt set, initialised from
the experience's rows, or freeze it), `route` (which
prompt set, if any, serves a given train or test set; what decoder prefix tokens it needs),
`plugins` (Avalanche plugins: replay buffers, regularisation penalties) and `info` (facts recorded in
run.json). What a decode or an encoder output may be reused for is decided by the suite from the modules and
the method's state (cl_asr/cl/decode_key.py, cl_asr/cl/fingerprint.py), never declared here.

Methods that keep one parameter set per experience (prompts, LoRA, adapters) derive from `SetRoutedMethod`,
which chooses the set at evaluation by the experience identity (`oracle`) or by Whisper's language ID (`lid`).
"""
from __future__ import annotations

import math

from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterator, Literal, Sequence

import torch
from torch import nn

from ..core import Route, Target, tensor_digest  # noqa: F401  (re-exported: strategies import them from here)
from ..registry import Registry

METHODS: Registry[type["Method"]] = Registry("strategy")


def register_method(name: str):
    def decorator(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.register(name)(cls)

    return decorator


@dataclass
class MethodConfig:
    # `search`: the field is tuned by `run_suite.py tune` (cl_asr/tune.py): "log_factor": log-uniform within that
    # factor of the strategy's default either way; "choices": one of these values.
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate", "search": {"log_factor": 30}})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the gradient norm to this value (0 = off)"})
    schedule: Literal["constant", "linear"] = field(
        default="constant",
        metadata={"help": "learning-rate schedule within an experience: constant, or linear warm-up then linear "
                  "decay to zero"},
    )
    warmup: float = field(default=0.1, metadata={"help": "share of an experience's steps spent warming up (linear)"})
    max_nonfinite_in_a_row: int = field(
        default=5,
        metadata={"help": "training steps with a NaN/inf loss or gradient are skipped and counted; this many in a "
                  "row end the experience's training (recorded in run.json and the report)"},
    )
    # Decoding-time shallow fusion with an n-gram LM of each experience's training text (cl_asr/cl/lm_fusion.py),
    # any strategy: `fft[lm_weight=0.3]`. `recorded_when_set`: run.json records the field only when it differs
    # from its default, so run directories made before the field existed resume and compare unchanged.
    lm_weight: float = field(default=0.0, metadata={
        "help": "shallow-fusion weight of an n-gram LM trained on the experience's training transcripts, used when "
                "decoding that experience's test set once it is trained (0 = off)",
        "recorded_when_set": True, "search": {"choices": [0.0, 0.1, 0.2, 0.3, 0.5], "only_when_named": True}})
    lm_order: int = field(default=3, metadata={
        "help": "the fusion LM's n-gram order (Whisper tokens)", "recorded_when_set": True})
    language_token: Literal["borrowed", "new", "new_copied"] = field(default="borrowed", metadata={
        "help": "an unseen language's decoder token: borrowed (the scenario's decode_language, default), or a new "
                "token of its own, CL-MASR's protocol, initialised at random (new) or from the borrowed token's "
                "embedding (new_copied); its row trains with the experience (cl_asr/cl/language_tokens.py)",
        "recorded_when_set": True})

    def decoder_prefix_positions(self) -> int:
        """Decoder positions this strategy's own prefix takes before Whisper's (e.g. a decoder prompt's
        placeholders): checked before any work against the backbone's decoder length, with Whisper's prefix and
        max_new_tokens (cl_asr/runner.py check_request). Override it where a config adds decoder positions."""
        return 0

    def __post_init__(self):
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.max_nonfinite_in_a_row < 1:
            raise ValueError(f"max_nonfinite_in_a_row must be at least 1, got {self.max_nonfinite_in_a_row}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")
        if not math.isfinite(self.lm_weight) or self.lm_weight < 0:
            raise ValueError(f"lm_weight must be 0 (off) or positive, got {self.lm_weight}")
        if self.lm_order < 1:
            raise ValueError(f"lm_order must be at least 1, got {self.lm_order}")


@dataclass(frozen=True)
class Capabilities:
    """What a strategy declares about itself (class attribute `capabilities`); the loop and the runner read
    these, never the strategy's name."""

    trains: bool = True  # False: never trained (zero_shot); the runner only evaluates it
    joint: bool = False  # trained once on all experiences together: the joint reference (intransigence)
    # trained on each experience alone from the pretrained model: the single-task reference (CL-MASR's FWT)
    single_task: bool = False
    # one model decodes every set, base-language sets included (no per-set choice by the experience identity:
    # O-LoRA, merged LoRAs, a mixture of experts, L2P's prompt pool): base sets need not stay at zero-shot
    task_agnostic: bool = False
    # a plugin reads the model's logits at every position (LwF distils them); otherwise the training loss
    # projects only the labelled positions onto the vocabulary
    full_logits: bool = False
    # batch columns the strategy conditions on per utterance; the loop hands them to `route(target, conditioning)`
    # (target-speaker prompts: "enrolment", the speaker embedding)
    conditioning: tuple[str, ...] = ()
    # a multi-step method's steps, in order (text_spt: "prompt", then "decoder"): the loop asks
    # `phase_for_epoch` which step an epoch belongs to and, when it changes, calls `set_phase` and rebuilds the
    # optimiser over the new `trainable_parameters()`
    phases: tuple[str, ...] = ()


class Method:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_class: ClassVar[type] = MethodConfig
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, config, model: nn.Module, tokenizer, seed: int = 0, *, base_languages: Sequence[str] = (),
                 features_of: Callable[[Sequence[dict]], torch.Tensor] | None = None):
        """Everything a strategy needs, given here: its config, its copy of the backbone, the tokenizer, the
        seed, the scenario's base languages (Whisper codes; their sets are decoded by the plain backbone) and a
        function from dataset rows to log-mel features (for methods that look at audio before training)."""
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.seed = seed
        self.base_languages: tuple[str, ...] = tuple(base_languages)
        self.features_of = features_of
        self.experiences_trained = 0  # how many experiences have finished training (counted by end_experience)

    # -- what a strategy defines -------------------------------------------------------------------------
    def setup(self) -> None:
        """Prepare the backbone (freeze, wrap, install hooks). Called once, before any evaluation."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates during the current experience."""
        return []

    def param_groups(self) -> list[dict]:
        """Optimiser parameter groups (override to give parts of the model their own learning rate)."""
        return [{"params": self.trainable_parameters()}]

    def stored_parameters_per_experience(self) -> int:
        """Parameters that must be kept for each learned experience (a checkpoint's worth of new state)."""
        return 0

    def before_experience(self, target: Target, rows: Sequence[dict] = ()) -> None:
        """Called before training on `target`; `rows` are its training rows (dicts with at least `text`)."""

    def after_experience(self, target: Target) -> None:
        pass

    def end_experience(self, target: Target) -> None:
        """Called by the training loop when training on `target` ends: `after_experience`, then the count of
        trained experiences (kept here, so that no strategy has to)."""
        self.after_experience(target)
        self.experiences_trained += 1

    @contextmanager
    def route(self, target: Target, conditioning: dict | None = None) -> Iterator[Route]:
        """Activate whatever serves `target` (e.g. its prompt set) for the duration of the block; `conditioning`
        holds the batch's columns named in `capabilities.conditioning`."""
        yield Route()

    def route_batch(self, target: Target, input_features: torch.Tensor,
                    conditioning: dict | None = None) -> list["RouteGroup"]:
        """How to decode a batch of `target`: groups of rows, each with its route. One group unless the method
        routes utterance by utterance (language-ID routing)."""
        n = input_features.shape[0]
        return [RouteGroup(list(range(n)), self.route(target, conditioning), [None] * n, None)]

    def plugins(self) -> list:
        """Avalanche plugins the method needs during training (replay buffer, EWC penalty, distillation)."""
        return []

    def info(self) -> dict:
        """Facts about this run of the method recorded in run.json (e.g. which language LAPT started from)."""
        return {}

    # -- special data: text-only experiences, per-utterance conditioning, multi-step training --------------
    def problem_with(self, scenario) -> str | None:
        """Why this method cannot run on `scenario` (None: it can). The runner records the reason as the
        strategy's outcome and goes on with the others, instead of failing mid-run."""
        return self.text_only_problem() if scenario.text_only_experiences else None

    def text_only_problem(self) -> str | None:
        """Why this method cannot learn from a text-only experience (None: it can). On text-only data the
        encoder sees no audio: only decoder-side parameters learn, from `text_only_encoder_states`."""
        return None

    def text_only_encoder_states(self, batch_size: int, device, dtype) -> torch.Tensor:
        """What the decoder cross-attends to for a text-only batch: by default one all-zero frame ('no
        audio', the empty-prompt baseline of text-only SPT); text_spt substitutes its learned pseudo audio."""
        d = self.model.model.config.d_model
        return torch.zeros(batch_size, 1, d, device=device, dtype=dtype)

    def phase_for_epoch(self, epoch: int, epochs: int) -> str | None:
        """With `capabilities.phases`: the step epoch `epoch` (0-based) of `epochs` belongs to."""
        return None

    def set_phase(self, phase: str | None) -> None:
        """With `capabilities.phases`: training enters step `phase` (None: the experience is over)."""

    def routes_per_row(self, target: Target) -> bool:
        """True when rows of one set may be decoded under different routes (`route_batch` makes several
        groups); the decode memo then keys the set by the whole strategy state. Overriding `route_batch`
        makes this True unless this is overridden too."""
        return type(self).route_batch is not Method.route_batch

    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def extra_modules(self) -> list[nn.Module]:
        """Modules a method owns outside the backbone (moved to the device with the model)."""
        return []


@dataclass
class RouteGroup:
    """Rows of a batch decoded together under `route`; `chosen` / `oracle` are the parameter-set keys picked
    for each row and the one the experience identity would pick (None = no set: the plain backbone)."""

    rows: list[int]
    route: AbstractContextManager
    chosen: list[str | None]
    oracle: str | None


EvalRouting = Literal["oracle", "lid", "learned"]


@dataclass
class SetRoutedConfig(MethodConfig):
    """The config of a method with one parameter set per experience (SetRoutedMethod): prompts, LoRA, adapters."""

    mode: Literal["separate", "shared"] = field(
        default="separate",
        metadata={"help": "separate: a new parameter set (prompts, LoRA, adapters) per experience, the papers' "
                  "default; shared: one set trained through all experiences"})
    eval_routing: EvalRouting = field(
        default="oracle",
        metadata={"help": "which parameter set decodes a test utterance: its experience's own (oracle) or the one "
                  "Whisper's language ID points to (lid, task-agnostic) or the one a classifier trained on each "
                  "experience's training audio points to (learned, task-agnostic: cl_asr/methods/learned_router.py)"})


class SetRoutedMethod(Method):
    """Its config derives from `SetRoutedConfig` (mode, eval_routing).

A method with one parameter set per experience (or one shared set), chosen at evaluation by the
    experience identity (`eval_routing: oracle`) or, task-agnostically, by Whisper's language ID (`lid`) or by
    a classifier learned from each experience's training audio (`learned`, cl_asr/methods/learned_router.py).

    LID routing: each learned experience keeps its language-ID profile, the frozen model's mean probability
    over Whisper's languages on its training audio; a base language's profile is its one-hot vector. An
    utterance goes to the candidate whose profile is closest (cosine) to its own language-ID distribution;
    a base language means 'no set'. Subclasses define `set_key`, `activate` and `_set_exists`, and call
    `record_routing_profile(index, rows)` in `before_experience`, while the plain backbone is still what the new
    set leaves unchanged.
    """

    config_class: ClassVar[type] = SetRoutedConfig

    def __init__(self, config, model, tokenizer, seed: int = 0, **context):
        super().__init__(config, model, tokenizer, seed, **context)
        self.lid_profiles: dict[int, torch.Tensor] = {}  # experience index -> mean LID distribution

    # -- what subclasses define ----------------------------------------------------------------------------
    def set_key(self, index: int) -> str:
        return "shared" if getattr(self.config, "mode", "separate") == "shared" else str(index)

    def activate(self, key: str | None, conditioning: dict | None = None) -> AbstractContextManager[Route]:
        """Make set `key` serve (None: the plain backbone) for the duration of the block."""
        raise NotImplementedError

    def _set_exists(self, key: str) -> bool:
        raise NotImplementedError

    def routes_per_row(self, target: Target) -> bool:
        # before any experience is trained there is no set to route to (lid: only base-language candidates;
        # learned: no class): every row gets the plain backbone, a decode the memo may share
        return getattr(self.config, "eval_routing", "oracle") != "oracle" and target.stream != "train" \
            and self.experiences_trained > 0

    # -- oracle routing -----------------------------------------------------------------------------------
    def oracle_key(self, target: Target) -> str | None:
        if not target.is_experience:
            return None  # preservation (base-language) sets are decoded by the plain backbone
        key = self.set_key(target.index)
        if target.stream == "train":
            return key
        learned = target.index < self.experiences_trained or self.set_key(0) == "shared"
        return key if learned and self._set_exists(key) else None

    def route(self, target: Target, conditioning: dict | None = None):
        return self.activate(self.oracle_key(target), conditioning)

    # -- task-agnostic routing: language ID, or the learned router -----------------------------------------
    def record_routing_profile(self, index: int, rows: Sequence[dict]) -> None:
        """What the routing needs to know of experience `index`, from its training rows through the plain
        backbone: its language-ID profile (`lid`) or its class in the learned router (`learned`). Nothing for
        oracle routing, and nothing twice (a decoding twin records it after the training, cl_asr/runner.py)."""
        routing = getattr(self.config, "eval_routing", "oracle")
        if not rows or self.features_of is None or self.has_routing_profile(index):
            return
        if routing == "lid":
            self.lid_profiles[index] = self.language_distribution(rows).mean(dim=0)
        elif routing == "learned":
            from .learned_router import StreamingLDARouter

            if getattr(self, "learned_router", None) is None:  # made only when used: others' state is unchanged
                self.learned_router = StreamingLDARouter()
            self.learned_router.add(self.set_key(index), index, self.speech_features(rows))

    def has_routing_profile(self, index: int) -> bool:
        routing = getattr(self.config, "eval_routing", "oracle")
        if routing == "lid":
            return index in self.lid_profiles
        if routing == "learned":
            router = getattr(self, "learned_router", None)
            return router is not None and index in router.experiences
        return True

    def speech_features(self, rows_or_features, batch: int = 16) -> torch.Tensor:
        """[N, d] the plain backbone's encoder output averaged over speech frames (the learned router's input)."""
        from .learned_router import speech_frame_features

        if torch.is_tensor(rows_or_features):
            with self.activate(None):
                return speech_frame_features(self.model, rows_or_features,
                                             plain_encoder_states(self.model, rows_or_features))
        rows = list(rows_or_features)
        parts = []
        with self.activate(None):
            for i in range(0, len(rows), batch):
                parts.append(speech_frame_features(self.model, self.features_of(rows[i: i + batch])))
        return torch.cat(parts)

    def language_distribution(self, rows_or_features) -> torch.Tensor:
        """[N, n_languages] language-ID probabilities of the plain backbone (no set active)."""
        from ..backbones.lid import language_distribution

        feats = rows_or_features
        if not torch.is_tensor(feats):
            feats = self.features_of(list(rows_or_features)[: self.lid_rows])
        with self.activate(None):
            return language_distribution(self.model, self.tokenizer, feats, plain_encoder_states(self.model, feats))

    lid_rows: ClassVar[int] = 8  # training utterances a language-ID profile averages over

    def lid_candidates(self) -> list[tuple[str | None, torch.Tensor]]:
        from ..backbones.lid import LANGUAGE_CODES

        out: list[tuple[str | None, torch.Tensor]] = []
        for code in self.base_languages:
            onehot = torch.zeros(len(LANGUAGE_CODES))
            onehot[LANGUAGE_CODES.index(code)] = 1.0
            out.append((None, onehot))
        for index, profile in sorted(self.lid_profiles.items()):
            if index < self.experiences_trained:
                out.append((self.set_key(index), profile))
        return out

    def route_batch(self, target: Target, input_features: torch.Tensor,
                    conditioning: dict | None = None) -> list[RouteGroup]:
        oracle = self.oracle_key(target)
        n = input_features.shape[0]
        routing = getattr(self.config, "eval_routing", "oracle")
        if target.stream == "train" or routing == "oracle":
            return [RouteGroup(list(range(n)), self.activate(oracle, conditioning), [oracle] * n, oracle)]
        if routing == "learned":
            router = getattr(self, "learned_router", None)
            keys = [] if router is None else router.keys_learned(self.experiences_trained)
            chosen = router.route(self.speech_features(input_features), keys) if keys else [None] * n
            return self._groups(chosen, conditioning, oracle)
        candidates = self.lid_candidates()
        if not candidates:
            raise RuntimeError(f"{self.name}: eval_routing 'lid' needs base languages or learned experiences")
        probs = self.language_distribution(input_features).cpu()
        profiles = torch.stack([p for _, p in candidates])
        scores = torch.nn.functional.normalize(probs, dim=-1) @ torch.nn.functional.normalize(profiles, dim=-1).T
        chosen = [candidates[i][0] for i in scores.argmax(dim=-1).tolist()]
        return self._groups(chosen, conditioning, oracle)

    def _groups(self, chosen: list[str | None], conditioning: dict | None, oracle: str | None) -> list[RouteGroup]:
        """Rows that chose the same set, decoded together under it."""
        groups = []
        for key in dict.fromkeys(chosen):  # first-seen order, deterministic
            rows = [i for i, k in enumerate(chosen) if k == key]
            groups.append(RouteGroup(rows, self.activate(key, rows_of(conditioning, rows)), [key] * len(rows), oracle))
        return groups


# Routing runs the plain backbone over the batch being evaluated (Whisper's language ID, the learned router's
# features) before it is decoded. The evaluation lends its encoder cache here for that (cl/decoding.py
# decode_batch), so those passes reuse encoder outputs the cache holds, which under a frozen encoder are also the
# ones the decode needs. The cache itself decides from the modules whether an output may be reused (an encoder
# with hooks, gradients or foreign layers is not: None, and the pass computes it as before).
lent_encoder_cache: ContextVar[Callable[[nn.Module, torch.Tensor], torch.Tensor | None] | None] = \
    ContextVar("lent_encoder_cache", default=None)


def plain_encoder_states(model: nn.Module, input_features: torch.Tensor) -> torch.Tensor | None:
    """`model`'s encoder output for these features from the encoder cache lent by the evaluation in progress,
    or None (no cache lent, or this encoder's output may not be reused: compute it)."""
    encode = lent_encoder_cache.get()
    return None if encode is None else encode(model, input_features)


def rows_of(conditioning: dict | None, rows: list[int]) -> dict | None:
    """The conditioning columns of some rows of a batch."""
    if conditioning is None:
        return None
    return {k: v[rows] if torch.is_tensor(v) else [v[i] for i in rows] for k, v in conditioning.items()}


def freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
