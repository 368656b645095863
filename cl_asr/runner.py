"""Run a scenario with a list of strategies: the whole experiment, top to bottom.

`run_benchmark` prepares what every strategy shares (`prepare`: names, backbone, scenario, the run directory,
the caches), then runs each (strategy, seed) with `run_strategy`: a fresh copy of the backbone, evaluation of
every test and preservation set before training (row -1), then for every experience `train(experience)` and
evaluation of every set again (`one_pass`). After each pass the strategy is checkpointed
(cl_asr/checkpoints.py), then the pass's rows are appended to the run directory (cl_asr/run_dir.py), and
run.json records the strategy's outcome when it is done. Re-running the same command on the run directory
skips what is complete and resumes an interrupted strategy from its last finished pass, so a crash at any
point loses at most the pass in progress and the results equal an uninterrupted run's.
"""
from __future__ import annotations

import copy
import ctypes
import dataclasses
import gc
import random
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import distributed, orders, variants
from .backbones import cache_dir, check_backbone_spec, load_backbone
from .backbones.window import set_encoder_window, window_feature_extractor
from .config import config_record
from .checkpoints import load_checkpoint, pristine_names, save_checkpoint, set_rng_state
from .cl import language_tokens
from .cl.collate import ASRCollator
from .cl.encoder_cache import EncoderCache
from .cl.resources import PeakMemory
from .cl.decoding import DecodeMemo
from .cl.template import ASRTemplate
from .core import tensor_digest
from .env_info import device_info, environment_lock, git_commit, package_versions, timing_device
from .log import log
from .methods import METHODS, get_method, method_config
from .metrics.text import pooled, score_utterances
from .registry import UnknownNameError
from .run_dir import RunDirectory, StrategiesFailed, StrategyRun
from .scenarios import load_scenario_builder, scenario_path
from .scenarios.base import EVALUATED_SPLITS
from .tuned_defaults import tuned_record


@dataclass
class RunRequest:
    scenario: str
    strategies: list[str]
    profile: str
    out_dir: Path
    backbone: str | None = None
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    device: str | None = None
    progress: bool = True
    report: bool = True
    command: str = ""
    caches: bool = True  # False: no decode memo, no encoder or cross-attention cache (compute everything)
    evaluate: str = "test"  # "dev": the scenario's dev sets are evaluated instead of its test sets (tuning)
    # Variants (cl_asr/variants.py, README "Variants"): `strategies` may hold inline ones, `base[key=value,...]`,
    # and names of these, {name: {"strategy": base, "config": {key: value}}} (a --variants file)
    variants: dict = dataclasses.field(default_factory=dict)
    profile_overrides: dict = dataclasses.field(default_factory=dict)  # --set key=value: scenario-profile fields
    # --orders (cl_asr/orders.py): a count or explicit experience orders; each order of a strategy is a row
    orders: int | list | None = None


def release_memory(device: torch.device) -> None:
    """Hand freed memory back to the OS between strategies, so that each strategy's peak memory is its own
    (glibc keeps freed heap pages in the process otherwise, and a later strategy would inherit FFT's)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def weights_checksum(model: torch.nn.Module) -> str:
    """A hash of every weight (name, dtype, shape, values) of the backbone the run starts from."""
    named = sorted(model.state_dict().items())
    return tensor_digest([t for _, t in named], [n for n, _ in named])



def evaluate_pass(strategy: ASRTemplate, scenario, name: str, seed: int, trained_through: int):
    """Decode every test and preservation set; return (result rows, prediction rows, seconds)."""
    routing = getattr(strategy.method.config, "eval_routing", None)
    strategy.eval_outputs = {}
    start = time.perf_counter()
    # one call for every set, so a model that decodes them alike can batch across sets
    strategy.eval([*scenario.benchmark.test_stream, *scenario.benchmark.preservation_stream])
    seconds = time.perf_counter() - start
    rows, preds = [], []
    extras = scenario.reference_extras()  # segments / entities by utterance id, read once per scenario
    for (stream, _), out in sorted(strategy.eval_outputs.items(), key=lambda kv: (kv[0][0] != "test", kv[0][1])):
        per_utt = score_utterances(out.refs, out.hyps, out.target.language, scenario.metrics_for(*out.target_key),
                                   [extras.get(i, {}) for i in out.ids])
        for metric, counts in per_utt.items():
            c = pooled(counts)
            rows.append({
                "scenario": scenario.name, "strategy": name, "seed": seed, "trained_through": trained_through,
                "eval_on": out.target.name, "metric": metric, "value": c.rate, "edits": c.edits,
                "ref_tokens": c.ref_tokens, "n_utts": len(out.refs), "stream": stream,
                "decode_language": out.target.decode_language,
                **({"routing": routing, "routing_accuracy": out.routing_accuracy} if routing else {}),
            })
        preds.append({
            "strategy": name, "seed": seed, "trained_through": trained_through, "eval_on": out.target.name,
            "stream": stream, "ids": out.ids, "refs": out.refs, "hyps": out.hyps,
            # per-utterance counts: every figure, bootstrap interval and worst-utterance table comes from these
            "edits": {m: [c.edits for c in cs] for m, cs in per_utt.items()},
            "ref_tokens": {m: [c.ref_tokens for c in cs] for m, cs in per_utt.items()},
            **({"routes": out.routes, "oracle_route": out.oracle_route} if routing else {}),
        })
    return rows, preds, seconds


def resolve_precision(setting: str, device: torch.device) -> str:
    """auto: bf16 on a GPU with bf16 support, fp32 elsewhere (this project's 2-core CPU has no bf16 units:
    bf16 autocast made the encoder 2.3x slower there, reports/speed)."""
    if setting != "auto":
        return setting
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def evaluation_steps(method_cls, n_exp: int) -> list[int]:
    """Rows of the error matrix a strategy fills: -1 (before training) and after every experience; a joint
    strategy trains once on everything, so it has the first and the last row only."""
    return [-1, n_exp - 1] if method_cls.capabilities.joint else list(range(-1, n_exp))


@dataclass
class Run:
    """What every strategy of a run shares, resolved once by `prepare`."""

    req: RunRequest
    classes: dict  # strategy name -> class
    configs: dict  # strategy name -> config
    profile: object
    device: torch.device
    precision: str
    processes: object  # distributed.Processes, or None: this process does all the work
    pristine: torch.nn.Module  # the backbone every strategy starts from (a deep copy each)
    tokenizer: object
    scenario: object
    collator: ASRCollator
    steps: dict  # strategy name -> the error-matrix rows it fills (evaluation_steps)
    rows_per_pass: int
    base_languages: tuple
    run_dir: RunDirectory
    memo: DecodeMemo
    memo_context: tuple
    encoder_cache: EncoderCache | None
    build_seconds: float
    names: list = dataclasses.field(default_factory=list)  # row names: strategies x orders (cl_asr/orders.py)
    ordered: dict = dataclasses.field(default_factory=dict)  # row name -> its scenario reordered (--orders)
    twin_of: dict = dataclasses.field(default_factory=dict)  # decoding twin -> the row it is evaluated from
    riders: dict = dataclasses.field(default_factory=dict)  # (row, seed) -> twins evaluated with it this time
    twin_lms: dict = dataclasses.field(default_factory=dict)  # fused decoding twin -> {experience index: its LM}
    stage: str = ""  # what the strategy running now is doing (setup, training on X, ...): named if it fails

    @property
    def main(self) -> bool:
        return self.run_dir.writer

    def scenario_of(self, name: str):
        """The scenario as row `name` trains on it: in its own experience order (--orders), else as built."""
        return self.ordered.get(name, self.scenario)

    def features_of(self, rows) -> torch.Tensor:
        """Log-mel features of dataset rows (what strategies that look at audio before training are given)."""
        return self.collator(list(rows))["input_features"]


def canonical_request(req: RunRequest) -> RunRequest:
    """`req` checked (check_request: refuses a bad name, variant or override before anything is written) and
    spelled as the run directory records it: variants canonically (`spt_decoder[lr=1e-1]` is
    `spt_decoder[lr=0.1]`), --orders expanded into row names, --set values as validated. Every way into a run
    (the CLI, `run_grid`, `run_benchmark` called from Python) goes through it, so one strategy is one row name
    however it was spelled, and a resume finds its rows. Its own canonical request (idempotent)."""
    checked = check_request(req)
    return dataclasses.replace(req, strategies=checked.names, profile_overrides=checked.profile_overrides,
                               orders=None)


def run_benchmark(req: RunRequest) -> Path:
    req = canonical_request(req)
    run_dir = RunDirectory(req.out_dir)
    try:
        return _run_all(req, run_dir)
    finally:
        run_dir.release()  # the lock taken in prepare (cl_asr/run_dir.py)


def _run_all(req: RunRequest, run_dir: RunDirectory) -> Path:
    t_start = time.perf_counter()
    run = prepare(req, run_dir)
    failed = []
    for seed in req.seeds:  # every seed sees the same backbone and test sets; training randomness varies
        for name in run.names:
            if any(name in riders for (_, s), riders in run.riders.items() if s == seed):
                continue  # a decoding twin, evaluated (or failed) with the row it shares its training with
            try:
                run_strategy(run, name, seed)
            except Exception as exc:  # noqa: BLE001 - a strategy fails alone: recorded, the others go on
                if run.processes:  # every process shares each step: the others would wait for this one forever
                    raise
                failed += [record_failure(run, n, seed, exc) for n in (name, *run.riders.get((name, seed), ()))]
    if not run.main:
        return run.run_dir.path
    cache = run.encoder_cache
    run.run_dir.finish(
        complete=not failed,
        timings={"scenario_build_seconds": round(run.build_seconds, 2),
                 "total_seconds_this_invocation": round(time.perf_counter() - t_start, 2)},
        speed={"precision": run.precision, "processes": run.processes.world if run.processes else 1,
               "decode_memo": "on" if req.caches else "off",
               "encoder_cache": cache.stats() if cache is not None else "off"})
    if req.report and any(not s.get("failure") for s in run.run_dir.meta["strategy_runs"]):
        from .report import write_report

        log(f"report: {write_report(run.run_dir.path)}")
    elif req.report:
        log("no report: no strategy finished")
    if failed:
        raise StrategiesFailed(
            f"{len(failed)} of {len(req.seeds) * len(run.names)} strategy run(s) failed: " + "; ".join(failed)
            + f". The others are in {run.run_dir.path}; run the same command again to retry the failed ones "
              "(each resumes from its last finished evaluation pass).")
    log(f"done in {time.perf_counter() - t_start:.0f} s; results in {run.run_dir.path}")
    return run.run_dir.path


def record_failure(run: Run, name: str, seed: int, exc: Exception) -> str:
    """A strategy raised: log it with its traceback and record it in run.json (the report's "Failures"); its
    checkpoint, if it finished a pass, stays for the retry. Returns the one-line summary."""
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    stage = run.stage or "start"
    trace = traceback.format_exception(exc)
    log(f"{name} (seed {seed}) FAILED during {stage}: {reason}\n{''.join(trace).rstrip()}")
    run.run_dir.record(StrategyRun(name, seed, run.classes[name].description, config_record(run.configs[name]),
                                   failure={"kind": "raised", "during": stage, "reason": reason,
                                            "traceback": "".join(trace[-6:]).rstrip()}))
    release_memory(run.device)
    return f"{name} (seed {seed}) during {stage}: {reason}"


# Whisper's own decoder prefix: <|startoftranscript|> <|language|> <|transcribe|> <|notimestamps|> (cl/collate.py)
WHISPER_PREFIX_TOKENS = 4


@dataclass
class Checked:
    """What `check_request` resolved: the request's names, as the run uses them."""

    classes: dict  # strategy name -> class (a variant's: its base's)
    builder: object  # the scenario builder
    profile: object  # with the request's profile_overrides applied
    configs: dict  # strategy name -> config (a variant's: its base's with its overrides)
    names: list = dataclasses.field(default_factory=list)  # the request's strategies, variants spelled canonically
    variants: dict = dataclasses.field(default_factory=dict)  # variant name -> {"strategy": base, "overrides"}
    profile_overrides: dict = dataclasses.field(default_factory=dict)  # validated --set values
    orders: dict = dataclasses.field(default_factory=dict)  # row name -> its experience order (not the scenario's)


def check_request(req: RunRequest) -> Checked:
    """Every mistake a command can hold, refused in a second with one message naming the flag, file, key or
    value, before the run directory or anything else is touched: seeds, device, backbone spec, strategy and
    scenario names, the scenario file and each strategy's YAML (cl_asr/config.py refuses unknown keys, wrong
    types and non-finite numbers)."""
    if not req.seeds or len(set(req.seeds)) != len(req.seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {req.seeds}")
    bad = [s for s in req.seeds if not 0 <= s < 2**32]  # what numpy's and torch's seeding accept
    if bad:
        raise ValueError(f"--seeds: {bad[0]} is not a seed: seeds are integers from 0 to 2**32-1")
    check_device(req.device)
    if req.evaluate not in EVALUATED_SPLITS:
        raise ValueError(f"evaluate must be one of {', '.join(EVALUATED_SPLITS)}, got {req.evaluate!r}")
    twice = next((e for i, e in enumerate(req.strategies) if e in req.strategies[:i]), None)
    if twice is not None:  # (spellings of one variant are found by variants.resolve)
        raise ValueError(f"--strategies names a strategy twice: {twice}; each row name once")
    builder = load_scenario_builder(req.scenario)
    # Stream orders (cl_asr/orders.py): every entry in every order asked for, each order a row of its own
    experiences = list(builder.outline()["experiences"])
    entries = orders.expand(req.strategies, orders.resolve(req.orders, experiences), experiences)
    order_of = {}
    for entry in entries:
        order = orders.split(entry)[1]
        order_of[entry] = orders.check(order, experiences, f"strategy {entry}") if order else experiences
    classes = {name: strategy_class(orders.split(name)[0], req.variants) for name in entries}
    profile = builder.profile(req.profile)
    if req.profile_overrides:  # --set: validated like the scenario file's profile
        profile = variants.with_overrides(profile, req.profile_overrides, "--set")
    check_backbone_spec(req.backbone or profile.backbone)
    bases = list(dict.fromkeys(orders.split(e)[0] for e in entries))
    resolved = {r.entry: r for r in variants.resolve(
        bases, req.variants, registered=lambda n: n in METHODS,
        base_config=lambda base: method_config(base, req.profile, profile.prompt_length, scenario=builder.config.name))}
    configs = {e: resolved[orders.split(e)[0]].config for e in entries}
    for e in entries:  # shallow fusion fuses each experience's test set with the LM of that experience's text
        if classes[e].capabilities.joint and getattr(configs[e], "lm_weight", 0.0) > 0:
            raise ValueError(f"strategy {e}: lm_weight fuses each experience's test set with an LM of that "
                             "experience's text, learned with it; a joint strategy learns every experience at once, "
                             "so it has no LM per experience: drop lm_weight")
    names = [orders.row_name(resolved[orders.split(e)[0]].name, order_of[e], experiences) for e in entries]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"--strategies names {twice} twice (with --orders, an entry's orders are rows of their own)")
    return Checked(classes, builder, profile, configs, names=names,
                   variants={e: resolved[orders.split(e)[0]].record() for e in entries
                             if resolved[orders.split(e)[0]].is_variant},
                   profile_overrides={k: getattr(profile, k) for k in req.profile_overrides},
                   orders={e: order_of[e] for e in entries if order_of[e] != experiences})


def strategy_class(name: str, named: dict):
    """The class of a strategy or of a variant's base (cl_asr/variants.py); an unknown base names the variant."""
    base, overrides, where = variants.base_of(name, named)
    try:
        return get_method(base)
    except UnknownNameError as exc:
        if overrides is None:
            raise
        raise UnknownNameError(f"{where}: {exc}") from None


def check_device(spec: str | None) -> None:
    if spec is None:
        return
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {spec!r}: not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec}: this machine has no CUDA GPU that torch {torch.__version__} can use; "
                             "leave --device out (cuda when there is one, else cpu) or give --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: this machine has {torch.cuda.device_count()} GPU(s) "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {spec}: Apple's MPS is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {spec}: only cpu, cuda and mps devices are supported")


def check_decoder_positions(configs: dict, model, max_new_tokens: int) -> None:
    """A strategy's decoder prefix (prompt placeholders) + Whisper's prefix + the decoding cap must fit the
    backbone's decoder positions (448 on every Whisper); else training or decoding would fail deep inside
    transformers with an IndexError."""
    positions = model.config.max_target_positions
    for name, config in configs.items():
        own = config.decoder_prefix_positions()
        need = own + WHISPER_PREFIX_TOKENS + max_new_tokens
        if need > positions:
            length = f" (prompt_length {config.prompt_length})" if hasattr(config, "prompt_length") else ""
            raise ValueError(f"strategy {name}: its decoder prefix of {own} positions{length} + Whisper's "
                             f"{WHISPER_PREFIX_TOKENS} prefix tokens + max_new_tokens {max_new_tokens} = {need} exceeds "
                             f"the backbone's {positions} decoder positions: lower prompt_length (in the strategy's "
                             "baselines/ file, a variant's override or the profile's prompt_length) or the "
                             "profile's max_new_tokens")


def prepare(req: RunRequest, run_dir: RunDirectory) -> Run:
    """Check the request (in a second, before any expensive work), take the run directory, load the backbone,
    build the scenario, open and check the run directory, and set up the decode memo and the encoder cache."""
    checked = check_request(req)
    classes, builder, profile, configs = checked.classes, checked.builder, checked.profile, checked.configs
    backbone_spec = req.backbone or profile.backbone
    # Several processes (run_suite.py run --processes N, started by torchrun): all run this function alike,
    # each on its own GPU, sharing the work of every step; only the main one writes (cl_asr.distributed).
    processes = distributed.init_from_environment(req.device)
    run_dir.take(req.command)  # one owner per run directory, before anything in it is read (the main process)
    device = processes.device() if processes else torch.device(req.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = resolve_precision(profile.precision, device)
    log(f"loading backbone {backbone_spec} on {device}")
    # Seed 0 for a random backbone whatever the run's seeds: the backbone stands for a pretrained model that
    # every seed starts from, so seeds vary only what adaptation randomises (new parameters, order, dropout).
    with distributed.main_first():  # the main process converts / synthesises and caches; the others read it
        backbone = load_backbone(backbone_spec, seed=0)
    check_decoder_positions(configs, backbone.model, profile.max_new_tokens)  # before the scenario is built
    set_encoder_window(backbone.model, profile.encoder_window_seconds)
    feature_extractor = window_feature_extractor(backbone.feature_extractor, profile.encoder_window_seconds)
    pristine = backbone.model.to(device).eval()

    log(f"building scenario {builder.config.name} ({req.profile} profile)")
    t0 = time.perf_counter()
    with distributed.main_first():
        scenario = builder.build(profile, backbone, feature_extractor, progress=req.progress and run_dir.writer,
                                 evaluate=req.evaluate)
    build_seconds = time.perf_counter() - t0
    scenario.check_disjoint()  # no utterance (nor promised sentence or voice) in a training and an evaluated set
    log(f"decode languages: {scenario.settings.get('decode_language')}")
    n_exp = len(scenario.benchmark.train_stream)
    rows_per_pass = sum(len(scenario.metrics_for(*key)) for key in scenario.evaluation_sets())
    names = list(configs)  # the request's strategies, each in every order asked for (--orders)
    if checked.orders and scenario.experience_names != list(builder.outline()["experiences"]):
        raise ValueError(f"scenario {builder.config.name}: its built experiences {scenario.experience_names} are not "
                         f"those its file lists ({builder.outline()['experiences']}): --orders cannot be applied")
    ordered = {name: scenario.reordered(checked.orders[name]) for name in checked.orders}
    twin_of = decoding_twins(names, classes, configs)
    for twin, source in twin_of.items():
        log(f"{twin}: evaluated from the training of {source} (they differ only in how they decode: "
            f"{', '.join(sorted(config_differences(configs[source], configs[twin])))})")
    steps = {name: evaluation_steps(classes[name], n_exp) for name in names}
    config = {
        "scenario": builder.config.name, "scenario_file": str(scenario_path(req.scenario)),
        "scenario_config": dataclasses.asdict(builder.config), "profile": req.profile,
        "profile_config": dataclasses.asdict(profile), "backbone": backbone_spec, "seeds": req.seeds,
        "strategies": {n: config_record(c) for n, c in configs.items()},
        "variants": checked.variants, "profile_overrides": checked.profile_overrides,
    }
    if checked.orders:  # only then: run.json of a run without --orders stays as it was
        config["orders"] = checked.orders
    if req.evaluate != "test":  # only then: run.json of a test run stays as it was
        config["evaluate"] = req.evaluate
    # What determined the results: the same run directory must keep seeing the same weights and data.
    checksums = {"backbone": weights_checksum(pristine), "data": scenario.checksums()}
    run_dir.open(config, checksums, {n: config_record(c) for n, c in configs.items()},
                 {name: len(steps[name]) * rows_per_pass for name in names},
                 {"git": git_commit(), "packages": package_versions(), "environment_lock": environment_lock(),
                  "tuned_defaults": tuned_record(builder.config.name, req.profile,
                                                 sorted({classes[n].name for n in configs})),
                  "device": device_info(device),
                  "scenario_settings": scenario.settings, "content_checksums": scenario.checksums(leave_out=("id",)), "experiences": scenario.experience_names,
                  "preservation": scenario.preservation_names, "metric": scenario.metric, "command": req.command})
    encoder_cache = EncoderCache(profile.encoder_cache_mb, cache_dir() / "encoder_outputs",
                                 profile.encoder_cache_disk_mb, profile.cross_attention_cache_mb
                                 ) if profile.encoder_cache_mb > 0 and req.caches else None
    return Run(
        req=req, classes=classes, configs=configs, profile=profile, device=device, precision=precision,
        processes=processes, pristine=pristine, tokenizer=backbone.tokenizer, scenario=scenario,
        collator=ASRCollator(backbone.tokenizer, feature_extractor, scenario.decode_languages), steps=steps,
        rows_per_pass=rows_per_pass,
        base_languages=tuple(t.decode_language for (s, _), t in sorted(scenario.targets.items()) if s == "preservation"),
        names=names, ordered=ordered, twin_of=twin_of, run_dir=run_dir, memo=DecodeMemo(enabled=req.caches),
        memo_context=(backbone_spec, profile.encoder_window_seconds, precision), encoder_cache=encoder_cache,
        build_seconds=build_seconds)


def run_strategy(run: Run, name: str, seed: int) -> None:
    """One (strategy, seed): skipped if complete, resumed from its checkpoint, or started; every pass it has
    left, then its outcome into run.json."""
    ckpt_path = run.run_dir.checkpoint(name, seed)
    if (name, seed) in run.run_dir.complete:
        log(f"{name} (seed {seed}): already complete, skipped")
        if run.main:
            ckpt_path.unlink(missing_ok=True)  # a crash after the costs were recorded can leave one
        return
    release_memory(run.device)
    seed_everything(seed)
    run.stage = "setup"
    # Decoding twins of this row not yet complete ride along: evaluated after each of its passes (one_pass)
    riders = [t for t, source in run.twin_of.items() if source == name and (t, seed) not in run.run_dir.complete]
    run.riders[(name, seed)] = riders
    method, book, done_steps, pristine_of = start_or_resume(run, name, seed, ckpt_path, riders)
    problem = method.problem_with(run.scenario_of(name)) if method.capabilities.trains else None
    if problem:  # e.g. encoder prompts on a text-only scenario: say so, record it, go on with the others
        log(f"{name} cannot run on {run.scenario_of(name).name}: {problem}")
        for n in (*riders, name):
            run.run_dir.record(StrategyRun(n, seed, run.classes[n].description, config_record(run.configs[n]),
                                           failure={"kind": "cannot run", "reason": problem}))
        return
    p = run.profile
    strategy = ASRTemplate(
        method=method, collator=run.collator, target_of=run.scenario_of(name).target_of, train_mb_size=p.batch_size,
        train_epochs=p.epochs, eval_mb_size=p.eval_batch_size, max_new_tokens=p.max_new_tokens, device=run.device,
        memo=run.memo, memo_context=run.memo_context, seed=seed, progress=run.req.progress and run.main,
        encoder_cache=run.encoder_cache, precision=run.precision, loader_workers=p.loader_workers,
    )
    strategy.faults = book["faults"]
    with PeakMemory(run.device) as mem:
        for step in run.steps[name][len(done_steps):]:
            one_pass(run, strategy, name, seed, step, book, done_steps, pristine_of, mem)
    for twin in riders:  # before the row's own record: a crash in between resumes the row, never the twin alone
        run.run_dir.record(dataclasses.replace(
            outcome(run, twin, seed, strategy, book, mem), eval_seconds=round(book["twin_eval_seconds"][twin], 2),
            info={**method.info(), "evaluated_from": name}))
    run.run_dir.record(outcome(run, name, seed, strategy, book, mem))
    if run.main:
        ckpt_path.unlink(missing_ok=True)  # the strategy is complete: its rows and costs are all written


def start_or_resume(run: Run, name: str, seed: int, ckpt_path: Path, riders: list[str] = ()) -> tuple:
    """(method, cost book, finished evaluation steps, pristine-parameter names): from the checkpoint of the last
    finished pass if there is one that matches the results files, else a fresh method on a copy of the backbone.
    `riders`: decoding twins evaluated with this row; its checkpoint holds their rows too."""
    config = config_record(run.configs[name])
    ckpt, pristine_of = load_checkpoint(ckpt_path, run.device, run.pristine, run.tokenizer, run.features_of) \
        if ckpt_path.is_file() else (None, {})
    if ckpt is not None and ckpt["book"]["config"] != config:
        raise ValueError(f"{run.run_dir.path}: the checkpoint of {name} (seed {seed}) was made with config "
                         f"{ckpt['book']['config']}, not the current {config}: use another --out directory")
    group = [name, *riders]
    if ckpt is not None and list(ckpt["book"].get("riders", [])) != list(riders):
        log(f"{name} (seed {seed}): its checkpoint was evaluated with the decoding twins "
            f"{ckpt['book'].get('riders', [])}, this run asks for {list(riders)}; starting it over")
        group += [t for t in ckpt["book"].get("riders", []) if t not in group]
        ckpt = None
    if ckpt is not None or any((n, seed) in run.run_dir.started for n in group):
        ckpt = run.run_dir.resume_rows(group, seed, ckpt, run.rows_per_pass,
                                       len(run.scenario_of(name).evaluation_sets()))
    if ckpt is None:
        log(f"strategy {name} (seed {seed})")
        method = run.classes[name](run.configs[name], copy.deepcopy(run.pristine), run.tokenizer, seed=seed,
                                   base_languages=run.base_languages, features_of=run.features_of)
        pristine_of = pristine_names(method, run.pristine)
        language_tokens.attach(method, run.scenario_of(name))  # [language_token=new]: before setup wraps the model
        method.setup()
        book = {"config": config, "train_seconds": [], "eval_seconds": 0.0, "trainable": 0,
                "decodes": {"computed": 0, "reused": 0, "not_shareable": 0}, "peak_memory_mb": 0.0, "faults": [],
                "stored_bytes": 0}
        if riders:  # only then: a checkpoint without twins stays as it was
            book.update(riders=list(riders), twin_eval_seconds=dict.fromkeys(riders, 0.0))
        return method, book, [], pristine_of
    set_rng_state(ckpt["rng"])
    last = ckpt["done_steps"][-1]
    log(f"strategy {name} (seed {seed}): resumed from its checkpoint after "
        f"{'the evaluation before training' if last < 0 else run.scenario_of(name).experience_names[last]}")
    language_tokens.attach(ckpt["method"], run.scenario_of(name))  # the shared tokenizer learns its tokens again
    return ckpt["method"], ckpt["book"], list(ckpt["done_steps"]), pristine_of


def one_pass(run: Run, strategy: ASRTemplate, name: str, seed: int, step: int, book: dict, done_steps: list[int],
             pristine_of: dict, mem: PeakMemory) -> None:
    """Train on experience `step` (none for step -1), evaluate every set, checkpoint, append the rows."""
    method = strategy.method
    joint = method.capabilities.joint
    after = "all experiences at once" if joint else run.scenario_of(name).experience_names[step] if step >= 0 else ""
    if step >= 0 and method.capabilities.trains:
        run.stage = f"training on {after}"
        n_faults = len(strategy.faults)
        t0 = time.perf_counter()
        strategy.train(run.scenario_of(name).joint_train_experience() if joint
                       else run.scenario_of(name).benchmark.train_stream[step])
        book["train_seconds"].append(time.perf_counter() - t0)
        for fault in strategy.faults[n_faults:]:
            log(f"  {name}: training fault on {fault['experience']}: {fault['reason']}")
        book["trainable"] = max(book["trainable"], strategy.last_trainable)
    elif step >= 0 and getattr(method.config, "lm_weight", 0.0) > 0:  # zero_shot[lm_weight=W]: nothing to train,
        experience = run.scenario_of(name).benchmark.train_stream[step]  # but the LM of the experience's text
        strategy.learn_fusion_lm(rows_of_experience(experience), strategy.target_of(experience).index)
    run.stage = f"evaluation after {after}" if step >= 0 else "evaluation before training"
    rows, preds, secs = evaluate_pass(strategy, run.scenario_of(name), name, seed, step)
    book["eval_seconds"] += secs
    for o in strategy.eval_outputs.values():
        book["decodes"]["reused" if o.reused else "computed"] += 1
        # keyed by the strategy's own state: nothing proved it equal to another strategy's decode
        book["decodes"]["not_shareable"] = book["decodes"].get("not_shareable", 0) + (not o.shareable)
    for twin in book.get("riders", []):
        twin_rows, twin_preds, twin_secs = evaluate_as_twin(run, strategy, twin, seed, step)
        rows, preds = rows + twin_rows, preds + twin_preds  # one checkpoint and one append for the whole pass
        book["twin_eval_seconds"][twin] += twin_secs
    done_steps.append(step)
    timed_on = book.setdefault("timed_on", [])  # (a checkpoint written before this field has none)
    if timing_device(run.device) not in timed_on:
        timed_on.append(timing_device(run.device))
    # every process's peak so far: the job's is the largest
    book["peak_memory_mb"] = max(distributed.gather_objects(max(book["peak_memory_mb"], mem.peak_mb)))
    if run.main:  # checkpoint first, then the rows: a crash in between is mended from the checkpoint
        book["stored_bytes"] = max(book.get("stored_bytes", 0), save_checkpoint(
            run.run_dir.checkpoint(name, seed), method, done_steps, rows, preds, book, run.pristine, pristine_of))
        run.run_dir.append(rows, preds)
    for row_name in (name, *book.get("riders", [])):
        summary = ", ".join(f"{r['eval_on']}={r['value']:.3f}" for r in rows
                            if r["metric"] == run.scenario_of(name).metric and r["strategy"] == row_name)
        log(f"  {row_name} after {'no training' if step < 0 else after}: {run.scenario_of(name).metric} {summary}")


def decode_only_fields(method_cls) -> set[str]:
    """Config fields that change only how a trained model decodes, never what it trains: `eval_routing` (which
    parameter set a set-per-experience strategy decodes an utterance with) and the shallow-fusion LM's
    `lm_weight` / `lm_order` (the LM is counted from the experience's transcripts, not learned by the model).
    A joint strategy has no fusion (check_request refuses it)."""
    from .methods.base import SetRoutedMethod

    fields = set() if method_cls.capabilities.joint else {"lm_weight", "lm_order"}
    if issubclass(method_cls, SetRoutedMethod):
        fields.add("eval_routing")
    return fields


def config_differences(a, b) -> set[str]:
    """The fields whose values differ between two strategy configs."""
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    return {k for k in da.keys() | db.keys() if da.get(k) != db.get(k)}


def rows_of_experience(experience) -> list[dict]:
    """Every row of an experience's dataset, in order."""
    data = experience.dataset
    return [data[i] for i in range(len(data))]


def decoding_twins(names: list[str], classes: dict, configs: dict) -> dict[str, str]:
    """Decoding twins: twin -> the earlier row of the request it is evaluated from. Two rows of the same class,
    order and config but for fields that only change decoding (`decode_only_fields`) train alike, so the twin is
    not trained again: the same trained parameters are evaluated both ways, after every pass (README "Decoding
    twins"). What the twin's decoding needs of the training data is made from the same training rows as when it
    trains on its own (`evaluate_as_twin`)."""
    twin_of: dict[str, str] = {}
    for i, b in enumerate(names):
        decode_only = decode_only_fields(classes[b])
        for a in names[:i]:
            differ = config_differences(configs[a], configs[b])
            if (a not in twin_of and classes[a] is classes[b] and orders.split(a)[1] == orders.split(b)[1]
                    and differ and differ <= decode_only):
                twin_of[b] = a
                break
    return twin_of


def evaluate_as_twin(run: Run, strategy: ASRTemplate, twin: str, seed: int, step: int):
    """Evaluate the row's trained method with its decoding twin's config as rows of the twin; the row's own
    config and state are put back after. Language-ID and learned routing need each learned experience's LID
    profile or router class: recorded now from its training rows through the plain backbone, as the method
    records them when it trains with that routing (`record_routing_profile`). A fused twin gets the LMs of the
    experiences learned so far, counted from their training transcripts with its own lm_order, as training on
    its own would have made them (`learn_fusion_lm`), each once per run (`run.twin_lms`); the row's own LMs, if
    any, are set aside meanwhile."""
    method = strategy.method
    own = method.config
    own_lms = method.__dict__.pop("fusion_lms", None)
    method.config = run.configs[twin]
    try:
        scenario = run.scenario_of(twin)
        routed = "eval_routing" in decode_only_fields(type(method))  # a set-per-experience strategy
        for index in range(method.experiences_trained if routed else 0):
            if not method.has_routing_profile(index):
                method.record_routing_profile(index, rows_of_experience(scenario.benchmark.train_stream[index]))
        if getattr(method.config, "lm_weight", 0.0) > 0:  # experience `step` and those before it are learned
            lms = run.twin_lms.setdefault(twin, {})  # (an LM depends on the texts and lm_order, not the seed)
            learned = [strategy.target_of(scenario.benchmark.train_stream[k]).index for k in range(step + 1)]
            for k, index in enumerate(learned):
                if index not in lms:
                    strategy.learn_fusion_lm(rows_of_experience(scenario.benchmark.train_stream[k]), index)
                    lms[index] = method.fusion_lms[index]
            method.fusion_lms = {index: lms[index] for index in learned}
        return evaluate_pass(strategy, scenario, twin, seed, step)
    finally:
        method.config = own
        method.__dict__.pop("fusion_lms", None)
        if own_lms is not None:
            method.fusion_lms = own_lms


def outcome(run: Run, name: str, seed: int, strategy: ASRTemplate, book: dict, mem: PeakMemory) -> StrategyRun:
    method = strategy.method
    return StrategyRun(
        strategy=name, seed=seed, description=run.classes[name].description,
        config=config_record(run.configs[name]), trainable_params=book["trainable"],
        stored_params_per_experience=method.stored_parameters_per_experience() + language_tokens.stored_extra(method),
        # the largest checkpoint written after an experience: what the method needs stored to go on
        stored_bytes=book.get("stored_bytes", 0), backbone_params=sum(p.numel() for p in run.pristine.parameters()),
        train_seconds=round(sum(book["train_seconds"]), 2),
        train_seconds_per_experience=[round(s, 2) for s in book["train_seconds"]],
        eval_seconds=round(book["eval_seconds"], 2),
        peak_memory_mb=round(max(book["peak_memory_mb"], *distributed.gather_objects(mem.peak_mb)), 1),
        processes=run.processes.world if run.processes else None, decodes=book["decodes"],
        eval_routing=getattr(run.configs[name], "eval_routing", None), joint=run.classes[name].capabilities.joint,
        single_task=run.classes[name].capabilities.single_task or None,
        info=method.info(), training_faults=strategy.faults, timed_on=book.get("timed_on"))
