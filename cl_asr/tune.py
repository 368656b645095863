"""`run_suite.py tune`: a budgeted hyper-parameter search per strategy on dev sets only (Optuna).

Each trial is one run of the strategy with the trial's values as a variant (`name[lr=0.01]`, README "Variants")
on the scenario built with `evaluate="dev"`: every experience's dev set and every preservation language's dev set
take the place of the test sets, so no test set is synthesised, loaded or decoded (tests/test_tune.py checks).
The trials of a strategy share one run directory (TUNE_DIR/<strategy>/) and one Optuna study stored beside it
(TUNE_DIR/<strategy>.db), so an interrupted search resumes where it stopped: finished trials are kept, a trial
whose run was cut short runs first again with its own values and resumes from its last finished evaluation pass.

What is searched: the fields a strategy's config marks with `search` in their metadata (the learning rates:
log-uniform within a factor 30 of the strategy's current default either way; prompt length, ranks, replay buffer
size: a few values), or those named with --params. The first trial is the hand-set defaults (until a finished
trial holds them), so the winner is never one that did worse on the dev sets than the defaults it replaces. A
space of choices only, within the budget, is tried point by point (`_grid`), and where those fields only change
decoding (`runner.decode_only_fields`: lm_weight) the points are decoding twins of one training.

The objective is the mean error (the scenario's metric) over every dev set after the whole stream: the
experiences' (what was learned, and kept through the later experiences) and the preservation languages' (what
was known before). One number after the stream, rather than per experience, because a continual learner's
hyper-parameters must serve the whole stream: a learning rate that learns each experience best can forget the
earlier ones and the base languages, which only the end of the stream shows.

The winner of each strategy goes into the tuned-defaults file (cl_asr/tuned_defaults.py: tuned/<scenario>.yaml),
under the profile it was tuned on, with its provenance: the search space, every trial's values and dev error, the
objective, the backbone, the command and the git commit. Runs of that scenario and profile use it
(cl_asr/methods/__init__.py method_config) and record it in run.json.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from datetime import datetime, timezone
from pathlib import Path

from .config import ConfigError
from .env_info import git_commit
from .log import log
from .results import read_jsonl
from .tuned_defaults import tuned_path, write_tuned

OBJECTIVE = ("mean final error over every dev set (experiences and preservation languages) after the whole "
             "stream, in the scenario's metric")


def search_space(config, params: list[str] | None = None) -> dict[str, dict]:
    """field -> {"low", "high", "log"} or {"choices"}: what the config's fields declare searchable (around the
    config's current values; a spec with `only_when_named` only when --params names it), or only `params`
    (which must be searchable)."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    marked = {n: f.metadata["search"] for n, f in fields.items() if "search" in f.metadata}
    if params:
        unknown = [p for p in params if p not in marked]
        if unknown:
            raise ConfigError(f"--params {unknown[0]!r}: not a searchable field of {type(config).__name__} "
                              f"(searchable: {', '.join(marked) or 'none'})")
        marked = {p: marked[p] for p in params}
    else:  # a field searched only when asked for (lm_weight: fusion is a variant, not every strategy's default)
        marked = {n: spec for n, spec in marked.items() if not spec.get("only_when_named")}
    space = {}
    for name, spec in marked.items():
        value = getattr(config, name)
        if "log_factor" in spec:
            space[name] = {"low": float(f"{value / spec['log_factor']:.3g}"),
                           "high": float(f"{value * spec['log_factor']:.3g}"), "log": True}
        else:
            space[name] = {"choices": list(spec["choices"])}
    return space


def _suggest(trial, space: dict) -> dict:
    out = {}
    for name, spec in space.items():
        if "choices" in spec:
            out[name] = trial.suggest_categorical(name, spec["choices"])
        else:  # three significant digits: a variant name stays readable, and nearby values give one run
            value = trial.suggest_float(name, spec["low"], spec["high"], log=spec["log"])
            out[name] = float(f"{value:.3g}")
    return out


def variant(name: str, values: dict) -> str:
    """The variant spec of `name` with `values` (README "Variants"): name[key=value,...]."""
    return f"{name}[{','.join(f'{k}={v}' for k, v in sorted(values.items()))}]"


def dev_error(run_dir: Path, strategy: str, metric: str) -> float:
    """The objective of one finished trial, from its rows in the study's run directory."""
    rows = [r for r in read_jsonl(run_dir / "results.jsonl") if r["strategy"] == strategy and r["metric"] == metric]
    last = max(r["trained_through"] for r in rows)
    final = [r["value"] for r in rows if r["trained_through"] == last]
    return float(sum(final) / len(final))


@dataclasses.dataclass
class TuneRequest:
    scenario: str
    strategies: list[str]
    profile: str
    out_dir: Path  # the studies: <strategy>/ (run directory) and <strategy>.db (Optuna)
    trials: int = 8
    params: list[str] | None = None
    backbone: str | None = None
    seed: int = 0
    device: str | None = None
    progress: bool = False
    write: Path | None = None  # the tuned-defaults file; None: cl_asr/resources/tuned/<scenario>.yaml
    command: str = ""
    executor: str = "local"  # local: trials one after another here; ray: Ray Tune runs them (_search_on_ray)
    commit: str | None = None  # the code the search runs: read once when it starts (a later commit is not it)
    ray_address: str | None = None  # ray: a cluster to join; None: a Ray instance on this machine
    workers: int | None = None  # ray: trials at once (default: Ray's CPUs / job_cpus)
    job_cpus: float = 1  # ray: CPUs per trial
    job_gpus: float = 0  # ray: GPUs per trial


def tune(req: TuneRequest) -> Path:
    """Search every strategy of the request in turn; write the winners to the tuned-defaults file."""
    import optuna

    from .methods import get_method, method_config
    from .runner import decode_only_fields, run_benchmark
    from .scenarios import load_scenario_builder

    if req.trials < 1:
        raise ValueError(f"--trials must be at least 1, got {req.trials}")
    req = dataclasses.replace(req, commit=req.commit or git_commit().get("commit"))
    if req.executor not in ("local", "ray"):
        raise ValueError(f"--executor must be local or ray, got {req.executor!r}")
    builder = load_scenario_builder(req.scenario)
    profile = builder.profile(req.profile)
    scenario_name = builder.config.name
    spaces, bases = {}, {}
    for name in req.strategies:  # every name and space checked before the first trial
        if not get_method(name).capabilities.trains:
            raise ConfigError(f"strategy {name} does not train: it has nothing to tune")
        # around the hand-set defaults (baselines/), not an earlier search's result: a re-run searches the same space
        bases[name] = method_config(name, req.profile, profile.prompt_length, scenario=scenario_name, tuned=False)
        spaces[name] = search_space(bases[name], req.params)
        if not spaces[name]:
            raise ConfigError(f"strategy {name}: its config marks no field as searchable; nothing to tune")
    out = Path(req.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    chosen = {}
    for name in req.strategies:
        run_dir = out / name
        study = _open_study(out, name, req, req.write or tuned_path(scenario_name), spaces[name])
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        # A resumed search's sampler is seeded past the trials it has: seeded as at the start, it would propose
        # the first trials' values again (TPE's random start-up draws come first). Deterministic either way.
        study.sampler = optuna.samplers.TPESampler(seed=req.seed + len(study.trials))
        # The first trial of a new study is the hand-set defaults themselves, so a search never picks a value
        # that did worse on the dev sets than what it replaces (within one study, on these dev sets).
        defaults = _round({k: getattr(bases[name], k) for k in spaces[name]})
        start, n_new, grid = _first_trials(study, name, spaces[name], defaults, done, req.trials)
        run_trial = _TrialRunner(req, name, profile, scenario_name, builder.config.metric)
        log(f"tune {name}: {len(done)} of {req.trials} trials done; searching {spaces[name]}")
        if n_new > 0 and req.executor == "local" and grid is not None and len(start) > 1 and \
                set(spaces[name]) <= decode_only_fields(get_method(name)):
            # Every point differs only in how the trained model decodes (e.g. lm_weight): one training, every
            # point evaluated from it as a decoding twin (README "Decoding twins"; the same rows as training each
            # alone), in one run before the trials, which then find their rows there.
            log(f"tune {name}: {', '.join(spaces[name])} only change decoding: the {len(start)} points are "
                f"evaluated from one training")
            run_benchmark(run_trial.request([run_trial.spec(v) for v in start], run_dir))
        if n_new > 0 and req.executor == "ray":
            _search_on_ray(req, name, spaces[name], out, run_trial, n_new, req.seed + len(study.trials), start)
            study = optuna.load_study(study_name=name, storage=f"sqlite:///{(out / f'{name}.db').resolve()}")
        elif n_new > 0:
            for values in start:
                study.enqueue_trial(values)
            study.optimize(lambda trial: run_trial(_suggest(trial, spaces[name]), run_dir), n_trials=n_new)
        chosen[name] = _record(study, spaces[name], req, profile)
        for key, side in chosen[name]["provenance"].get("at_edge_of_space", {}).items():
            log(f"tune {name}: the best {key}, {chosen[name]['config'][key]:.3g}, lies at the {side} end of its search "
                f"space {spaces[name][key]}: the optimum may lie beyond it (widen the field's search spec, re-tune)")
        path = req.write or tuned_path(scenario_name)
        if _same_trials(path, req.profile, name, chosen[name]):
            log(f"tune {name}: no new trial; {path} keeps its record (commit and date of the search that ran)")
            continue
        # written as each study ends: a long search stopped later keeps the winners it has
        path = write_tuned(path, req.profile, {name: chosen[name]})
    return path


def _first_trials(study, name: str, space: dict, defaults: dict, done: list, trials: int
                  ) -> tuple[list[dict], int, list[dict] | None]:
    """(values to run first, in order; how many trials to run now; the space's grid or None). First a trial
    that a stopped search left running, then the defaults unless a finished trial holds them. A space of a few
    choices that the budget covers is searched exhaustively, each point once: TPE's draws would repeat some
    points (a repeat costs nothing but a trial) and leave others untried."""
    start = _resume_interrupted(study, name) + ([] if any(_round(t.params) == defaults for t in done) else [defaults])
    start = [v for i, v in enumerate(start) if v not in start[:i]]  # an interrupted defaults trial once
    n_new = trials - len(done)
    grid = _grid(space)
    if grid is not None and len(grid) <= trials:
        start += [v for v in grid if v not in start and not any(_round(t.params) == v for t in done)]
        n_new = len(start)
        log(f"tune {name}: the space has {len(grid)} points, within the {trials} trials: each is tried once")
    return start, n_new, grid


@dataclasses.dataclass
class _TrialRunner:
    """One strategy's trials: each a run of the strategy with the trial's values on the dev sets."""
    req: TuneRequest
    name: str
    profile: object
    scenario_name: str
    metric: str

    def spec(self, values: dict) -> str:
        """The row a trial with `values` (rounded) runs as: the plain name only where a run of it has these
        values (it takes the tuned-defaults file, an earlier search's winner, over the hand-set defaults, so
        the defaults' trial is then a variant too), else the variant name[key=value,...]."""
        from .methods import method_config

        current = method_config(self.name, self.req.profile, self.profile.prompt_length, scenario=self.scenario_name)
        return self.name if all(getattr(current, k) == v for k, v in values.items()) else variant(self.name, values)

    def request(self, specs: list[str], run_dir: Path):
        from .runner import RunRequest

        req = self.req
        return RunRequest(scenario=req.scenario, strategies=specs, profile=req.profile, out_dir=run_dir,
                          backbone=req.backbone, seeds=[req.seed], device=req.device, progress=req.progress,
                          report=False, command=req.command, evaluate="dev")

    def __call__(self, values: dict, run_dir: Path) -> float:
        """One trial: the strategy with `values` (rounded) on the dev sets, in `run_dir`; its objective."""
        from .runner import check_request, run_benchmark

        run_req = self.request([self.spec(values)], run_dir)
        (resolved,) = check_request(run_req).configs  # the variant's row name in the results
        run_benchmark(run_req)
        error = dev_error(run_dir, resolved, self.metric)
        log(f"tune {self.name}: trial {values} -> dev {self.metric} {error:.4f}")
        return error


def _resume_interrupted(study, name: str) -> list[dict]:
    """The values of trials left running by a search that was stopped (one process owns a tuning directory at a
    time, so any running trial found on opening is stale), to run first: each resumes its run from its last
    finished evaluation pass (the same values give the same variant name, hence the same checkpoint). A fresh
    proposal instead would leave the stopped trial's rows behind unfinished. The stale trials are marked failed
    (they are not counted); values a finished trial already holds are not run again."""
    import optuna

    finished = [_round(t.params) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    values = []
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.RUNNING:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            params = _round(trial.params)
            if params and params not in finished and params not in values:
                values.append(params)
                log(f"tune {name}: the stopped trial {params} goes on from where it was cut short")
    return values


def _open_study(out: Path, name: str, req: TuneRequest, tuned_file: Path, space: dict):
    """The strategy's Optuna study in OUT/<name>.db, resumed where that database is; on a new machine (the
    database, never committed, is gone or holds only failed trials) refilled from the tuned-defaults record."""
    import optuna

    study = optuna.create_study(study_name=name, direction="minimize", load_if_exists=True,
                                storage=f"sqlite:///{(out / f'{name}.db').resolve()}",
                                sampler=optuna.samplers.TPESampler(seed=req.seed))
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        _recover_trials(study, tuned_file, req.profile, name, space)
    return study


def _recover_trials(study, path: Path, profile: str, name: str, space: dict) -> None:
    """Refill an empty study from the tuned-defaults file's record of it (its trials' values and dev errors), so
    that a search finished on another machine is not run again. Only a record of the same search space counts.
    More trials than the record holds would run on this machine's corpora: the trials' run directory then refuses
    data other than what its committed trials ran on (cl_asr/run_dir.py), rather than mixing them."""
    import optuna

    prov = (_tuned_entry(path, profile, name) or {}).get("provenance") or {}
    if not prov.get("all_trials") or prov.get("search_space") != space:
        return
    distributions = {k: optuna.distributions.CategoricalDistribution(spec["choices"]) if "choices" in spec else
                     optuna.distributions.FloatDistribution(spec["low"], spec["high"], log=spec["log"])
                     for k, spec in space.items()}
    for trial in prov["all_trials"]:
        study.add_trial(optuna.trial.create_trial(params=trial["values"], distributions=distributions,
                                                  value=trial["dev_error"]))
    log(f"tune {name}: {len(prov['all_trials'])} trials recovered from {path} (its study database is not here)")


def _tuned_entry(path: Path, profile: str, name: str) -> dict | None:
    """The tuned-defaults file's record of one study (config and provenance), or None."""
    from .tuned_defaults import read_tuned_file

    path = Path(path)
    return ((read_tuned_file(path).get("profiles") or {}).get(profile) or {}).get(name) if path.is_file() else None


def _same_trials(path: Path, profile: str, name: str, record: dict) -> bool:
    """Whether the tuned-defaults file already records this study with exactly these trials and winner."""
    entry = _tuned_entry(path, profile, name)
    return bool(entry) and entry.get("config") == record["config"] and \
        (entry.get("provenance") or {}).get("all_trials") == record["provenance"]["all_trials"]


def _grid(space: dict) -> list[dict] | None:
    """Every point of a space made only of choices, in the order of the choices; None if a field is a range."""
    if not space or any("choices" not in spec for spec in space.values()):
        return None
    return [dict(zip(space, point)) for point in itertools.product(*(spec["choices"] for spec in space.values()))]


def _round(values: dict) -> dict:
    """Three significant digits for floats, as _suggest: a variant name stays readable."""
    return {k: (float(f"{v:.3g}") if isinstance(v, float) else v) for k, v in values.items()}


def _search_on_ray(req: TuneRequest, name: str, space: dict, out: Path, run_trial, n_trials: int,
                   sampler_seed: int, start: list[dict]) -> None:
    """`n_trials` more trials of `name` with Ray Tune: its OptunaSearch (the same TPE sampler, seed and Optuna
    study database as the local search, so the two resume each other's studies) proposes the values, Ray runs up
    to `workers` trials at once, each in a run directory of its own (out/<name>-ray/<variant>/: two runs never
    share a directory). Ray Tune's own records go to out/ray_tune/."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from .variants import file_component

    try:
        import ray
        from ray import tune as ray_tune
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise ValueError("tune --executor ray needs Ray Tune: pip install -e '.[ray]' (or pip install 'ray[tune]')"
                         ) from None
    if not ray.is_initialized():
        ray.init(address=req.ray_address, num_cpus=None if req.ray_address else req.workers,
                 include_dashboard=False, log_to_driver=True)
    distributions = {k: CategoricalDistribution(v["choices"]) if "choices" in v
                     else FloatDistribution(v["low"], v["high"], log=v["log"]) for k, v in space.items()}
    searcher = OptunaSearch(space=distributions, metric="dev_error", mode="min", points_to_evaluate=start or None,
                            sampler=optuna.samplers.TPESampler(seed=sampler_seed), study_name=name,
                            storage=optuna.storages.RDBStorage(f"sqlite:///{(out / f'{name}.db').resolve()}"))
    trials_dir = (out / f"{name}-ray").resolve()  # absolute: Ray Tune runs a trial in a directory of its own

    def trainable(config: dict) -> None:
        values = _round(config)
        ray_tune.report({"dev_error": run_trial(values, trials_dir / file_component(variant(name, values)))})

    resources = ray_tune.with_resources(trainable, {"cpu": req.job_cpus, "gpu": req.job_gpus})
    tuner = ray_tune.Tuner(
        resources, tune_config=ray_tune.TuneConfig(search_alg=searcher, num_samples=n_trials,
                                                   max_concurrent_trials=req.workers),
        run_config=ray_tune.RunConfig(name=name, storage_path=str((out / "ray_tune").resolve()), verbose=0))
    results = tuner.fit()
    failed = [r for r in results if r.error is not None]
    if failed:
        raise RuntimeError(f"tune {name}: {len(failed)} of {len(results)} Ray Tune trial(s) failed: {failed[0].error}")


def at_edge_of_space(values: dict, space: dict, margin: float = 0.1) -> dict[str, str]:
    """Searched ranges whose best value lies in the outer `margin` of the range (on a log scale where searched
    so): field -> "low" or "high". Such a winner says the optimum may lie outside the space searched, which a
    reader of the tuned value should know. Choices are not judged (their ends are often hard limits: 0 = off)."""
    out = {}
    for key, spec in space.items():
        if "low" not in spec or key not in values:
            continue
        scale = math.log if spec.get("log") else (lambda x: x)
        low, high = scale(spec["low"]), scale(spec["high"])
        where = (scale(values[key]) - low) / (high - low) if high > low else 0.5
        if where <= margin:
            out[key] = "low"
        elif where >= 1 - margin:
            out[key] = "high"
    return out


def _record(study, space: dict, req: TuneRequest, profile) -> dict:
    import optuna

    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(trials, key=lambda t: (t.value, t.number))
    values = {k: (float(f"{v:.3g}") if isinstance(v, float) else v) for k, v in best.params.items()}
    return {
        "config": values,
        "provenance": {
            "objective": OBJECTIVE, "dev_error": round(best.value, 6), "trials": len(trials),
            "search_space": space,
            "sampler": "every point of the space once (it fits the budget)" if (grid := _grid(space)) is not None
            and len(grid) <= req.trials else f"optuna TPE (seed {req.seed}, plus the trials done on resuming)",
            "executor": "Ray Tune (OptunaSearch)" if req.executor == "ray" else "local",
            "all_trials": [{"values": {k: (float(f"{v:.3g}") if isinstance(v, float) else v)
                                       for k, v in t.params.items()}, "dev_error": round(t.value, 6)}
                           for t in trials],
            **({"at_edge_of_space": edge} if (edge := at_edge_of_space(values, space)) else {}),
            "backbone": req.backbone or profile.backbone, "seed": req.seed, "command": req.command,
            "git_commit": req.commit or git_commit().get("commit"),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
