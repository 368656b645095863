"""Where the jobs of a run execute: one after another in this process (`local`), or as Ray tasks (`ray`).

A run is a grid of independent jobs, one per (strategy, seed) of its scenario. The local executor is
`runner.run_benchmark` itself. The Ray executor hands each job to Ray as a task with its resources declared
(CPUs, GPUs, memory) and a retry budget; a job is `run_benchmark` for that one strategy and seed, into its own
run directory `RUN_DIR/jobs/<strategy>_seed<N>/` (a variant's name made a file name by variants.file_component;
the usual layout: results.jsonl, predictions.jsonl, run.json, checkpoints/), so everything the reliability
rules promise holds per job and across workers: a retried or re-submitted job resumes from its last finished
evaluation pass, a finished one is skipped. When the jobs are done the driver gathers them into RUN_DIR in the
local executor's order (seed by seed, strategies in the order given), so RUN_DIR holds what a local run of the
same command writes, and writes the report.

On a cluster every node needs this package installed and RUN_DIR and the cache directory (CL_ASR_CACHE) on a
shared filesystem: jobs build their scenario from the cached corpora and write where the driver reads.
"""
from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import orders
from .config import config_record
from .log import log
from .results import read_jsonl
from .run_dir import RunDirectory, StrategiesFailed, StrategyRun
from .runner import RunRequest, canonical_request, check_request, run_benchmark
from .variants import file_component

EXECUTORS = ("local", "ray")


@dataclass
class RayOptions:
    """How the grid is handed to Ray."""

    address: str | None = None  # an existing cluster ("auto", "ray://host:10001", ...); None: start one here
    workers: int | None = None  # local instance only: CPUs it offers, i.e. jobs at once at job_cpus=1
    job_cpus: float = 1  # per job; Ray also sets the job's torch/OpenMP threads to this
    job_gpus: float = 0  # per job
    job_memory_gb: float | None = None  # per job, for Ray's scheduler (it does not cap the process)
    retries: int = 2  # attempts after the first, for a job that raised or whose worker died
    methods_from: list[Path] = field(default_factory=list)  # user strategy files, imported in every job


def job_name(strategy: str, seed: int) -> str:
    """The job's directory under jobs/ and its Ray task name (a variant's name made a file name)."""
    return f"{file_component(strategy)}_seed{seed}"


def run_grid(req: RunRequest, executor: str = "local", ray_options: RayOptions | None = None) -> Path:
    req = canonical_request(req)  # the row names every job and the run directory use
    if executor == "local":
        return run_benchmark(req)
    if executor == "ray":
        run_dir = RunDirectory(req.out_dir)  # the driver owns RUN_DIR; each job owns its own job directory
        try:
            return _run_on_ray(req, ray_options or RayOptions(), run_dir)
        finally:
            run_dir.release()
    raise ValueError(f"unknown executor {executor!r}: expected one of {', '.join(EXECUTORS)}")


# -- one job, on a worker ---------------------------------------------------------------------------------------
def _run_job(req: RunRequest, methods_from: list[str]) -> dict:
    """A Ray task: the run of one strategy and seed in its own directory. Each attempt is logged in
    attempts.jsonl there, so the driver can say how often a job was retried."""
    from .methods import load_methods_from

    load_methods_from([Path(p) for p in methods_from])  # user strategies register in this worker too
    out = Path(req.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "attempts.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "started": time.time()}) + "\n")
    start = time.perf_counter()
    run_benchmark(req)
    return {"dir": str(out), "seconds": round(time.perf_counter() - start, 2)}


# -- the driver -------------------------------------------------------------------------------------------------
def _job_complete(job_dir: Path, strategy: str, seed: int, config: dict | None = None) -> bool:
    """Whether the job finished; with `config`, a finished job run with another strategy config is refused
    (as run_benchmark refuses it in a local run directory), not skipped."""
    meta_path = job_dir / "run.json"
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    mine = [s for s in meta.get("strategy_runs", []) if s["strategy"] == strategy and s["seed"] == seed]
    if config is not None and mine and mine[0].get("config") != config:
        raise ValueError(f"{job_dir} holds {strategy} (seed {seed}) run with config {mine[0].get('config')}, "
                         f"which differs from the current {config}: use another --out directory")
    return meta.get("status") == "complete" and bool(mine)


def _requested(req: RunRequest) -> dict:
    # profile_overrides only when there are some: a directory from before --set existed has none
    return {"scenario": req.scenario, "profile": req.profile, "backbone": req.backbone,
            **({"profile_overrides": req.profile_overrides} if req.profile_overrides else {})}


def _check_compatible(out: Path, req: RunRequest) -> None:
    """What run_benchmark checks of a run directory, checked before any job is handed out (each job checks
    its own directory again: data checksums and strategy configs)."""
    meta_path = out / "run.json"
    if not meta_path.is_file():
        return
    old = json.loads(meta_path.read_text(encoding="utf-8")).get("config", {})
    if old.get("executor") != "ray":
        raise ValueError(f"{out} holds a run of the local executor: resume it with --executor local, or use "
                         "another --out directory")
    requested = _requested(req)
    for key in ("scenario", "profile", "backbone", "profile_overrides"):
        value = requested.get(key)
        if old.get("requested", {}).get(key) != value:
            raise ValueError(f"{out} already holds a run with {key}={old['requested'].get(key)!r}, not "
                             f"{value!r}: use another --out directory")


def _start_ray(options: RayOptions):
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install -e '.[ray]' (or pip install ray)") from None
    if not ray.is_initialized():
        if options.address:
            ray.init(address=options.address, log_to_driver=True)
        else:
            ray.init(num_cpus=options.workers, include_dashboard=False, log_to_driver=True)
    return ray


def _run_on_ray(req: RunRequest, options: RayOptions, run_dir: RunDirectory) -> Path:
    t_start = time.perf_counter()
    out = Path(req.out_dir)
    # Names and the directory are checked here, in a second, not by the first job after minutes in a queue.
    checked = check_request(req)
    configs = {n: config_record(c) for n, c in checked.configs.items()}
    run_dir.take(req.command)
    _check_compatible(out, req)
    grid = [(name, seed) for seed in req.seeds for name in req.strategies]  # the local executor's order
    jobs_dir = out / "jobs"
    todo = [(n, s) for n, s in grid if not _job_complete(jobs_dir / job_name(n, s), n, s, configs[n])]
    skipped = [job_name(*g) for g in grid if g not in todo]
    ray = _start_ray(options)

    task = ray.remote(_run_job)
    resources = dict(num_cpus=options.job_cpus, num_gpus=options.job_gpus, max_retries=options.retries,
                     retry_exceptions=True,
                     **({"memory": int(options.job_memory_gb * 2**30)} if options.job_memory_gb else {}))
    pending = {}
    for name, seed in todo:
        job_dir = jobs_dir / job_name(name, seed)
        job_req = replace(req, strategies=[name], seeds=[seed], out_dir=job_dir, progress=False, report=False,
                          variants={k: v for k, v in req.variants.items() if k == orders.split(name)[0]})
        ref = task.options(name=job_name(name, seed), **resources).remote(
            job_req, [str(p) for p in options.methods_from])
        pending[ref] = (name, seed)
    if skipped:
        log(f"already complete, skipped: {', '.join(skipped)}")
    log(f"{len(pending)} job(s) handed to Ray ({ray.cluster_resources().get('CPU', 0):g} CPUs, "
         f"{ray.cluster_resources().get('GPU', 0):g} GPUs in the cluster; per job {options.job_cpus:g} CPU, "
         f"{options.job_gpus:g} GPU, up to {options.retries} retries)")
    failures: dict[tuple[str, int], str] = {}
    total, done = len(grid), len(skipped)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        name, seed = pending.pop(ready[0])
        try:
            info = ray.get(ready[0])
            done += 1
            attempts = _attempts(jobs_dir / job_name(name, seed))
            log(f"[{done + len(failures)}/{total}] {job_name(name, seed)} done in {info['seconds']:.0f} s"
                 f"{f' (attempt {attempts})' if attempts > 1 else ''}; {len(pending)} to go, "
                 f"{len(failures)} failed")
        except Exception as exc:  # noqa: BLE001 - a failed job is reported and recorded, the others go on
            cause = getattr(exc, "cause", None) or exc
            raised = _job_failure(jobs_dir / job_name(name, seed), name, seed)  # the strategy raised: its record
            failures[(name, seed)] = (f"{raised['reason']} (during {raised.get('during', '?')})" if raised
                                      else f"{type(cause).__name__}: {cause}")
            log(f"[{done + len(failures)}/{total}] {job_name(name, seed)} FAILED after "
                 f"{_attempts(jobs_dir / job_name(name, seed))} attempt(s): {failures[(name, seed)]}")
    meta = gather(out, req, grid, failures, options, time.perf_counter() - t_start, checked.variants)
    if req.report and any(s for s in meta["strategy_runs"] if not s.get("failure")):
        from .report import write_report

        log(f"report: {write_report(out)}")
    if failures:
        raise JobsFailed(f"{len(failures)} of {total} job(s) failed: "
                         + "; ".join(f"{job_name(*k)}: {v}" for k, v in failures.items())
                         + f". The others are in {out}; re-run the same command to retry the failed ones.")
    log(f"done in {time.perf_counter() - t_start:.0f} s; results in {out}")
    return out


class JobsFailed(StrategiesFailed):
    """Some jobs of a grid failed for good; the rest were gathered."""


def gather(out: Path, req: RunRequest, grid: list[tuple[str, int]], failures: dict, options: RayOptions,
           seconds: float, variants: dict | None = None) -> dict:
    """RUN_DIR's results.jsonl, predictions.jsonl and run.json from the finished jobs, in grid order; written
    whole and atomically, so RUN_DIR always holds a consistent set of finished jobs. `variants`: the grid's
    variants (check_request), recorded as a local run records them."""
    variants = variants or {}
    rows, preds, runs, metas = [], [], [], {}
    for name, seed in grid:
        job_dir = out / "jobs" / job_name(name, seed)
        if not _job_complete(job_dir, name, seed):
            continue
        meta = json.loads((job_dir / "run.json").read_text(encoding="utf-8"))
        metas[(name, seed)] = meta
        rows += read_jsonl(job_dir / "results.jsonl") if (job_dir / "results.jsonl").is_file() else []
        preds += read_jsonl(job_dir / "predictions.jsonl") if (job_dir / "predictions.jsonl").is_file() else []
        runs += [s for s in meta["strategy_runs"] if s["strategy"] == name and s["seed"] == seed]
    for (name, seed), reason in failures.items():
        raised = _job_failure(out / "jobs" / job_name(name, seed), name, seed) or {}
        failure = {"kind": "job failed", "reason": reason,
                   **{k: raised[k] for k in ("during", "reason", "traceback") if k in raised}}
        variant = variants.get(name, {})
        runs.append(StrategyRun(name, seed, failure=failure, variant_of=variant.get("strategy"),
                                overrides=variant.get("overrides")).to_json())
    if not metas:
        merged = {"config": {}}
    else:
        sums = {k: m.get("checksums") for k, m in metas.items()}
        first_key, first = next(iter(metas.items()))
        for key, value in sums.items():
            if value != first.get("checksums"):
                raise ValueError(f"jobs {job_name(*first_key)} and {job_name(*key)} ran on different data or "
                                 "weights (run.json checksums differ): every worker must see the same cache "
                                 "directory (CL_ASR_CACHE) and backbone")
        merged = copy.deepcopy(first)
        merged["config"]["strategies"] = {n: metas[(n, s)]["config"]["strategies"][n] for n, s in metas}
        merged["config"]["seeds"] = sorted({s for _, s in metas})
        order_of = {n: o for m in metas.values() for n, o in m["config"].get("orders", {}).items()}
        if order_of:  # each job's row and its experience order (--orders)
            merged["config"]["orders"] = order_of
        else:
            merged["config"].pop("orders", None)
        merged["speed"] = {job_name(*k): m.get("speed") for k, m in metas.items()}
        merged["timings"] = {"total_seconds_this_invocation": round(seconds, 2),
                             "job_seconds": {job_name(*k): m.get("timings") for k, m in metas.items()}}
        merged["started"] = min(m.get("started", "") for m in metas.values())
    merged["config"].update({"executor": "ray", "requested": _requested(req), "grid": [job_name(*g) for g in grid],
                             "variants": {n: v for n, v in variants.items() if n in {g[0] for g in grid}},
                             "profile_overrides": dict(req.profile_overrides)})
    merged["grid"] = [list(g) for g in grid]  # what the report counts as asked for (cl_asr/report/load.py)
    merged["expected_rows"] = {k: v for m in metas.values() for k, v in m.get("expected_rows", {}).items()}
    merged.update({
        "strategy_runs": runs,
        "status": "complete" if len(metas) == len(grid) else "incomplete",
        "command": req.command,
        "executor": {"kind": "ray", "address": options.address, "job_cpus": options.job_cpus,
                     "job_gpus": options.job_gpus, "job_memory_gb": options.job_memory_gb,
                     "retries": options.retries,
                     "attempts": {job_name(*g): _attempts(out / "jobs" / job_name(*g)) for g in grid}},
    })
    RunDirectory(out).write_whole(rows, preds, merged)
    return merged


def _job_failure(job_dir: Path, name: str, seed: int) -> dict | None:
    """The failure the job recorded of its strategy (where it raised: cl_asr/runner.py record_failure), or None
    when it recorded none (its worker died first, say)."""
    try:
        meta = json.loads((job_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return next((s["failure"] for s in meta.get("strategy_runs", [])
                 if (s["strategy"], s["seed"]) == (name, seed) and s.get("failure")), None)


def _attempts(job_dir: Path) -> int:
    return len(read_jsonl(job_dir / "attempts.jsonl")) if (job_dir / "attempts.jsonl").is_file() else 0
