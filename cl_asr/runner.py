"""Run a scenario with a list of strategies: the whole experiment, top to bottom.

For each strategy: a fresh copy of the backbone, evaluation of every test and preservation set before
training (row -1), then for every experience `train(experience)` and evaluation of every set again.
After each evaluation pass the strategy is checkpointed (checkpoints/<strategy>_seed<N>.pt: the method whole,
random-number states, the pass's rows), then the pass is appended to results.jsonl / predictions.jsonl, and
run.json is rewritten after every strategy. Re-running the same command on the run directory skips what is
complete and resumes an interrupted strategy from its last finished pass, so a crash at any point loses at
most the pass in progress and the results equal an uninterrupted run's.
"""
from __future__ import annotations

import copy
import ctypes
import dataclasses
import gc
import json
import os
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .backbones import cache_dir, load_backbone
from .backbones.window import set_encoder_window, window_feature_extractor
from .cl.collate import ASRCollator
from .cl.encoder_cache import EncoderCache
from .cl.resources import PeakMemory
from .cl.template import ASRTemplate, DecodeMemo
from .env_info import device_info, git_commit, package_versions
from .methods import get_method, method_config
from .methods.base import tensor_digest
from .metrics.text import pooled, score_utterances
from .results import append_jsonl, read_jsonl, repair_jsonl, write_json_atomic, write_jsonl_atomic
from .scenarios import load_scenario_builder, scenario_path


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


def _log(msg: str) -> None:
    if not distributed.is_main():  # several processes run the job: the main one speaks for them
        return
    print(f"[cl_asr {datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


def weights_checksum(model: torch.nn.Module) -> str:
    """A hash of every weight (name, dtype, shape, values) of the backbone the run starts from."""
    named = sorted(model.state_dict().items())
    return tensor_digest([t for _, t in named], [n for n, _ in named])


def _check_writable(out: Path) -> None:
    """Fail in a second, not after the scenario is built; a directory made only for the probe is removed
    again, so a run that fails before writing anything leaves nothing behind."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("ok")
        probe.unlink()
        if created:
            out.rmdir()
    except OSError as exc:
        raise OSError(f"cannot write to the output directory {out}: {exc.strerror or exc}") from exc


def _evaluate(strategy: ASRTemplate, scenario, name: str, seed: int, trained_through: int):
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


def _completed(rows: list[dict], expected: dict[str, int]) -> set:
    """(strategy, seed) pairs whose result rows are all there; `expected` rows per strategy."""
    counts: dict[tuple, int] = {}
    for r in rows:
        counts[(r["strategy"], r["seed"])] = counts.get((r["strategy"], r["seed"]), 0) + 1
    return {k for k, n in counts.items() if n == expected.get(k[0])}


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and distributed.current() is not None:
        # one GPU per process: reading every GPU's state would open a CUDA context (memory) on each of them
        state["cuda_device"] = torch.cuda.get_rng_state()
    elif torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if not torch.cuda.is_available():
        return
    if distributed.current() is not None:  # this process's GPU only (see _rng_state)
        mine = state.get("cuda_device")
        if mine is None and state.get("cuda"):
            mine = state["cuda"][min(torch.cuda.current_device(), len(state["cuda"]) - 1)]
        if mine is not None:
            torch.cuda.set_rng_state(mine)
    elif "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    elif "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"])


def pristine_names(method, pristine: torch.nn.Module) -> dict[int, str]:
    """Which of the method's parameters started as which backbone parameter (by object identity; the method's
    model is a deep copy of `pristine`, and wrapping it, e.g. with peft, keeps the parameter objects)."""
    return {id(mine): name for (name, _), mine in zip(pristine.named_parameters(), method.model.parameters())}


def save_checkpoint(path: Path, method, done_steps: list[int], rows: list[dict], preds: list[dict], book: dict,
                    pristine: torch.nn.Module, pristine_of: dict[int, str]) -> int:
    """After an evaluation pass, before its rows are appended: everything needed to go on from here in another
    process (the method with its model, parameter sets, hooks and plugins, pickled whole with dill as
    Avalanche's checkpointing does; the random-number states; the pass's rows; the cost bookkeeping).

    Backbone parameters still equal to the pretrained ones are not written, only their names: a frozen-backbone
    method's checkpoint holds what it trained (prompts, LoRA, adapters), FFT's the whole model. Returns the
    checkpoint's size in bytes."""
    import dill

    path.parent.mkdir(parents=True, exist_ok=True)
    # not state: the template's feature function (the collator) and the backbone's tokenizer
    features_of = method.__dict__.pop("features_of", None)
    tokenizer = method.__dict__.pop("tokenizer")
    reference = dict(pristine.named_parameters())
    unchanged: dict[str, str] = {}  # the method's name of a parameter -> the backbone's
    held: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with torch.no_grad():
            for qname, p in method.model.named_parameters():
                source = pristine_of.get(id(p))
                if source is not None and torch.equal(p, reference[source]):
                    unchanged[qname] = source
                    held.append((p, p.data))
                    p.data = torch.empty(0, dtype=p.dtype, device=p.device)  # written as a name, not its values
        torch.save({"method": method, "unchanged_backbone": unchanged, "done_steps": done_steps, "rows": rows,
                    "preds": preds, "book": book, "rng": _rng_state()}, tmp, pickle_module=dill)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        size = tmp.stat().st_size
        os.replace(tmp, path)  # a crash while saving leaves the previous checkpoint whole
        return size
    finally:
        for p, data in held:
            p.data = data
        method.tokenizer = tokenizer
        if features_of is not None:
            method.features_of = features_of
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: Path, device: torch.device, pristine: torch.nn.Module, tokenizer) -> tuple[dict, dict[int, str]]:
    """The checkpoint with what it left out filled in (backbone parameters from `pristine`, the tokenizer), and
    the method-parameter -> backbone-name map for the next save."""
    import dill

    ckpt = torch.load(path, pickle_module=dill, map_location=device, weights_only=False)
    ckpt["method"].tokenizer = tokenizer
    reference = dict(pristine.named_parameters())
    model = ckpt["method"].model
    pristine_of = {}
    with torch.no_grad():
        for qname, source in ckpt.pop("unchanged_backbone", {}).items():
            p = model.get_parameter(qname)
            p.data = reference[source].detach().clone()
            pristine_of[id(p)] = source
    return ckpt, pristine_of


def _resume_rows(results_path: Path, preds_path: Path, name: str, seed: int, ckpt: dict | None,
                 rows_per_pass: int, passes: int, write: bool = True) -> dict | None:
    """Make the results files hold exactly the passes a strategy finished before its checkpoint, plus the
    checkpoint's own pass (appended if a crash came before its rows were); drop anything else of it. Returns
    the checkpoint, or None (start over) when there is none or the files do not match it."""
    rows = read_jsonl(results_path) if results_path.is_file() else []
    preds = read_jsonl(preds_path) if preds_path.is_file() else []
    mine = lambda r: r["strategy"] == name and r["seed"] == seed  # noqa: E731
    kept_rows = [r for r in rows if not mine(r)]
    kept_preds = [p for p in preds if not mine(p)]
    if ckpt is not None:
        before = set(ckpt["done_steps"][:-1])
        old_rows = [r for r in rows if mine(r) and r["trained_through"] in before]
        old_preds = [p for p in preds if mine(p) and p["trained_through"] in before]
        if len(old_rows) == rows_per_pass * len(before) and len(old_preds) == passes * len(before):
            kept_rows += old_rows + ckpt["rows"]
            kept_preds += old_preds + ckpt["preds"]
        else:
            _log(f"{name} (seed {seed}): the results files do not match its checkpoint; starting it over")
            ckpt = None
    distributed.barrier()  # every process decided from the same files before the main one rewrites them
    if write and kept_rows != rows:
        write_jsonl_atomic(results_path, kept_rows)
    if write and kept_preds != preds:
        write_jsonl_atomic(preds_path, kept_preds)
    return ckpt


def resolve_precision(setting: str, device: torch.device) -> str:
    """auto: bf16 on a GPU with bf16 support, fp32 elsewhere (this project's 2-core CPU has no bf16 units:
    bf16 autocast made the encoder 2.3x slower there, reports/speed)."""
    if setting != "auto":
        return setting
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def evaluation_steps(method_cls, n_exp: int) -> list[int]:
    """Rows of the error matrix a strategy fills: -1 (before training) and after every experience; a joint
    strategy trains once on everything, so it has the first and the last row only."""
    return [-1, n_exp - 1] if method_cls.joint else list(range(-1, n_exp))


def run_benchmark(req: RunRequest) -> Path:
    t_start = time.perf_counter()
    out = Path(req.out_dir)
    # Resolve every name before any expensive work, so typos fail in a second.
    classes = {name: get_method(name) for name in req.strategies}
    builder = load_scenario_builder(req.scenario)
    profile = builder.profile(req.profile)
    configs = {name: method_config(name, req.profile, profile.prompt_length) for name in req.strategies}
    backbone_spec = req.backbone or profile.backbone
    # Several processes (run_suite.py run --processes N, started by torchrun): all run this function alike,
    # each on its own GPU, sharing the work of every step; only the main one writes (cl_asr.distributed).
    processes = distributed.init_from_environment(req.device)
    main = distributed.is_main()
    progress = req.progress and main
    if main:
        _check_writable(out)

    device = processes.device() if processes else torch.device(req.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = resolve_precision(profile.precision, device)
    _log(f"loading backbone {backbone_spec} on {device}")
    if not req.seeds or len(set(req.seeds)) != len(req.seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {req.seeds}")
    # Seed 0 for a random backbone whatever the run's seeds: the backbone stands for a pretrained model that
    # every seed starts from, so seeds vary only what adaptation randomises (new parameters, order, dropout).
    with distributed.main_first():  # the main process converts / synthesises and caches; the others read it
        backbone = load_backbone(backbone_spec, seed=0)
    set_encoder_window(backbone.model, profile.encoder_window_seconds)
    feature_extractor = window_feature_extractor(backbone.feature_extractor, profile.encoder_window_seconds)
    pristine = backbone.model.to(device).eval()

    _log(f"building scenario {builder.config.name} ({req.profile} profile)")
    t0 = time.perf_counter()
    with distributed.main_first():
        scenario = builder.build(profile, backbone, feature_extractor, progress=progress)
    build_seconds = time.perf_counter() - t0
    _log(f"decode languages: {scenario.settings.get('decode_language')}")
    collator = ASRCollator(backbone.tokenizer, feature_extractor, scenario.decode_languages)

    n_exp = len(scenario.benchmark.train_stream)
    rows_per_pass = sum(len(scenario.metrics_for(*key)) for key in scenario.evaluation_sets())
    steps = {name: evaluation_steps(classes[name], n_exp) for name in req.strategies}
    expected_rows = {name: len(steps[name]) * rows_per_pass for name in req.strategies}
    base_languages = tuple(t.decode_language for (s, _), t in sorted(scenario.targets.items()) if s == "preservation")

    config = {
        "scenario": builder.config.name,
        "scenario_file": str(scenario_path(req.scenario)),
        "scenario_config": dataclasses.asdict(builder.config),
        "profile": req.profile,
        "profile_config": dataclasses.asdict(profile),
        "backbone": backbone_spec,
        "seeds": req.seeds,
        "strategies": {n: dataclasses.asdict(c) for n, c in configs.items()},
    }
    results_path, preds_path, meta_path = out / "results.jsonl", out / "predictions.jsonl", out / "run.json"
    if main:
        out.mkdir(parents=True, exist_ok=True)
    # What determined the results: the same run directory must keep seeing the same weights and data.
    checksums = {"backbone": weights_checksum(pristine), "data": scenario.checksums()}
    meta = {"strategy_runs": []}
    for path in (results_path, preds_path):  # a crash mid-append leaves at most a half-written last line
        dropped = repair_jsonl(path) if main else 0
        if dropped:
            _log(f"repaired {path.name}: dropped a half-written last line ({dropped} bytes) left by an interrupted run")
    distributed.barrier()  # the others read the files once the main process has mended them
    existing = read_jsonl(results_path) if results_path.is_file() else []
    rows_complete = _completed(existing, expected_rows)
    started = {(r["strategy"], r["seed"]) for r in existing}  # strategies with rows to keep or mend
    # Every check before anything in the directory changes.
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        old = meta.get("config", {})
        for key in ("scenario", "profile", "backbone"):
            if old.get(key) != config[key]:
                raise ValueError(
                    f"{out} already holds a run with {key}={old.get(key)!r}, not {config[key]!r}: "
                    "use another --out directory"
                )
        old_sums = meta.get("checksums")
        if old_sums and old_sums != checksums:
            changed = (["backbone weights"] if old_sums.get("backbone") != checksums["backbone"] else []) + [
                k for k in sorted(set(old_sums.get("data", {})) | set(checksums["data"]))
                if old_sums.get("data", {}).get(k) != checksums["data"].get(k)]
            raise ValueError(f"{out} was run on other data or weights than this command now has (changed: "
                             f"{', '.join(changed)}): resuming would mix results; use another --out directory")
        for done in meta.get("strategy_runs", []):  # skipping a finished strategy is only right if nothing changed
            name = done["strategy"]
            if name in configs and not done.get("failure") and done["config"] != dataclasses.asdict(configs[name]):
                raise ValueError(
                    f"{out} holds {name} (seed {done['seed']}) run with config {done['config']}, which differs "
                    f"from the current {dataclasses.asdict(configs[name])}: use another --out directory"
                )
    meta["checksums"] = checksums
    meta.setdefault("strategy_runs", [])
    # complete: every row written and the costs recorded; anything else of a strategy resumes from its checkpoint
    complete = rows_complete & {(s["strategy"], s["seed"]) for s in meta["strategy_runs"] if not s.get("failure")}
    config["strategies"] = {**meta.get("config", {}).get("strategies", {}), **config["strategies"]}
    old_seeds = meta.get("config", {}).get("seeds", [meta.get("config", {}).get("seed", 0)] if meta.get("config") else [])
    config["seeds"] = sorted(set(old_seeds) | set(req.seeds))  # a run directory may gather seeds over calls
    meta.update({
        "config": config,
        "status": "running",
        "started": meta.get("started") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": git_commit(),
        "packages": package_versions(),
        "device": device_info(device),
        "scenario_settings": scenario.settings,
        "experiences": scenario.experience_names,
        "preservation": scenario.preservation_names,
        "metric": scenario.metric,
        "command": req.command,
    })
    distributed.barrier()  # every process has read the directory as it was: from here only the main one writes
    if main:
        write_json_atomic(meta_path, meta)

    memo = DecodeMemo(enabled=req.caches)
    memo_context = (backbone_spec, profile.encoder_window_seconds, precision)
    encoder_cache = EncoderCache(profile.encoder_cache_mb, cache_dir() / "encoder_outputs",
                                 profile.encoder_cache_disk_mb, profile.cross_attention_cache_mb
                                 ) if profile.encoder_cache_mb > 0 and req.caches else None
    n_sets = len(scenario.evaluation_sets())
    for seed in req.seeds:  # every seed sees the same backbone and test sets; training randomness varies
        for name in req.strategies:
            ckpt_path = out / "checkpoints" / f"{name}_seed{seed}.pt"
            if (name, seed) in complete:
                _log(f"{name} (seed {seed}): already complete, skipped")
                if main:
                    ckpt_path.unlink(missing_ok=True)  # a crash after the costs were recorded can leave one
                continue
            release_memory(device)
            seed_everything(seed)
            ckpt, pristine_of = load_checkpoint(ckpt_path, device, pristine, backbone.tokenizer) if ckpt_path.is_file() else (None, {})
            if ckpt is not None and ckpt["book"]["config"] != dataclasses.asdict(configs[name]):
                raise ValueError(f"{out}: the checkpoint of {name} (seed {seed}) was made with config "
                                 f"{ckpt['book']['config']}, not the current {dataclasses.asdict(configs[name])}: "
                                 "use another --out directory")
            if ckpt is not None or (name, seed) in started:
                ckpt = _resume_rows(results_path, preds_path, name, seed, ckpt, rows_per_pass, n_sets, write=main)
            if ckpt is None:
                _log(f"strategy {name} (seed {seed})")
                method = classes[name](configs[name], copy.deepcopy(pristine), backbone.tokenizer, seed=seed)
                pristine_of = pristine_names(method, pristine)
                method.base_languages = base_languages
                method.setup()
                book = {"config": dataclasses.asdict(configs[name]), "train_seconds": [], "eval_seconds": 0.0,
                        "trainable": 0, "decodes": {"computed": 0, "reused": 0, "not_shareable": 0}, "peak_memory_mb": 0.0,
                        "faults": [], "stored_bytes": 0}
                done_steps = []
            else:  # go on from the last finished evaluation pass, in the state it left
                method, book, done_steps = ckpt["method"], ckpt["book"], list(ckpt["done_steps"])
                _set_rng_state(ckpt["rng"])
                last = done_steps[-1]
                _log(f"strategy {name} (seed {seed}): resumed from its checkpoint after "
                     f"{'the evaluation before training' if last < 0 else scenario.experience_names[last]}")
            del ckpt
            problem = method.problem_with(scenario) if method.trains else None
            if problem:  # e.g. encoder prompts on a text-only scenario: say so, record it, go on with the others
                _log(f"{name} cannot run on {scenario.name}: {problem}")
                meta["strategy_runs"] = [s for s in meta["strategy_runs"] if (s["strategy"], s["seed"]) != (name, seed)]
                meta["strategy_runs"].append({
                    "strategy": name, "seed": seed, "description": classes[name].description,
                    "config": dataclasses.asdict(configs[name]),
                    "failure": {"kind": "cannot run", "reason": problem},
                })
                if main:
                    write_json_atomic(meta_path, meta)
                del method
                continue
            strategy = ASRTemplate(
                method=method, collator=collator, target_of=scenario.target_of,
                train_mb_size=profile.batch_size, train_epochs=profile.epochs, eval_mb_size=profile.eval_batch_size,
                max_new_tokens=profile.max_new_tokens, device=device, memo=memo, memo_context=memo_context,
                seed=seed, progress=progress, encoder_cache=encoder_cache, precision=precision,
                loader_workers=profile.loader_workers,
            )
            strategy.faults = book["faults"]
            with PeakMemory(device) as mem:
                for step in steps[name][len(done_steps):]:
                    if step >= 0 and method.trains:
                        n_faults = len(strategy.faults)
                        t0 = time.perf_counter()
                        strategy.train(scenario.joint_train_experience() if method.joint
                                       else scenario.benchmark.train_stream[step])
                        book["train_seconds"].append(time.perf_counter() - t0)
                        for fault in strategy.faults[n_faults:]:
                            _log(f"  {name}: training fault on {fault['experience']}: {fault['reason']}")
                        book["trainable"] = max(book["trainable"], strategy.last_trainable)
                    rows, preds, secs = _evaluate(strategy, scenario, name, seed, step)
                    book["eval_seconds"] += secs
                    for o in strategy.eval_outputs.values():
                        book["decodes"]["reused" if o.reused else "computed"] += 1
                        # keyed by the strategy's own state: nothing proved it equal to another strategy's decode
                        book["decodes"]["not_shareable"] = book["decodes"].get("not_shareable", 0) + (not o.shareable)
                    book["peak_memory_mb"] = max(book["peak_memory_mb"], mem.peak_mb)
                    done_steps.append(step)
                    # every process's peak so far: the job's is the largest
                    book["peak_memory_mb"] = max(distributed.gather_objects(book["peak_memory_mb"]))
                    if main:  # checkpoint first, then the rows: a crash in between is mended from the checkpoint
                        book["stored_bytes"] = max(book.get("stored_bytes", 0), save_checkpoint(
                            ckpt_path, method, done_steps, rows, preds, book, pristine, pristine_of))
                        append_jsonl(results_path, rows)
                        append_jsonl(preds_path, preds)
                    summary = ", ".join(f"{r['eval_on']}={r['value']:.3f}" for r in rows if r["metric"] == scenario.metric)
                    after = "all experiences at once" if method.joint else scenario.experience_names[step]
                    _log(f"  {name} after {'no training' if step < 0 else after}: "
                         f"{scenario.metric} {summary}")
            meta["strategy_runs"] = [s for s in meta["strategy_runs"] if (s["strategy"], s["seed"]) != (name, seed)]
            meta["strategy_runs"].append({
                "strategy": name,
                "seed": seed,
                "description": classes[name].description,
                "config": dataclasses.asdict(configs[name]),
                "trainable_params": book["trainable"],
                "stored_params_per_experience": method.stored_parameters_per_experience(),
                # the largest checkpoint written after an experience: what the method needs stored to go on
                "stored_bytes": book.get("stored_bytes", 0),
                "backbone_params": sum(p.numel() for p in pristine.parameters()),
                "train_seconds": round(sum(book["train_seconds"]), 2),
                "train_seconds_per_experience": [round(s, 2) for s in book["train_seconds"]],
                "eval_seconds": round(book["eval_seconds"], 2),
                "peak_memory_mb": round(max(book["peak_memory_mb"], *distributed.gather_objects(mem.peak_mb)), 1),
                **({"processes": processes.world} if processes else {}),
                "decodes": book["decodes"],
                "eval_routing": getattr(configs[name], "eval_routing", None),
                "joint": classes[name].joint,
                "info": method.info(),
                "training_faults": strategy.faults,  # steps skipped for NaN/inf losses, experiences ended early
            })
            if main:
                write_json_atomic(meta_path, meta)
                ckpt_path.unlink(missing_ok=True)  # the strategy is complete: its rows and costs are all written
            del strategy, method

    if not main:
        return out
    if (out / "checkpoints").is_dir() and not any((out / "checkpoints").iterdir()):
        (out / "checkpoints").rmdir()
    meta["status"] = "complete"
    meta["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta["timings"] = {"scenario_build_seconds": round(build_seconds, 2),
                       "total_seconds_this_invocation": round(time.perf_counter() - t_start, 2)}
    meta["speed"] = {"precision": precision, "processes": processes.world if processes else 1,
                     "decode_memo": "on" if req.caches else "off",
                     "encoder_cache": encoder_cache.stats() if encoder_cache is not None else "off"}
    write_json_atomic(meta_path, meta)
    if req.report:
        from .report import write_report

        report = write_report(out)
        _log(f"report: {report}")
    _log(f"done in {time.perf_counter() - t_start:.0f} s; results in {out}")
    return out
