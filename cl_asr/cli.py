"""Command line: `python run_suite.py [list | run ... | report RUN_DIR | compare RUN_DIR... --out DIR | tune ...]`; no
command runs the default benchmark."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path

DEFAULT_SCENARIO = "languages"
DEFAULT_STRATEGIES = "zero_shot,fft,spt_decoder,spt_entire"
DEFAULT_PROFILE = "quick"


def _methods_from(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods-from", type=Path, action="append", default=[], metavar="FILE.py",
                        help="register strategies from your own Python file (repeatable); see README, "
                        "'Add a strategy'")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_suite.py",
        description="cl_asr: a continual-learning benchmark suite for speech recognition on Whisper. "
        f"With no command, runs the {DEFAULT_PROFILE!r} profile of {DEFAULT_SCENARIO!r} with "
        f"{DEFAULT_STRATEGIES} into runs/<timestamp>/.",
    )
    sub = p.add_subparsers(dest="command")
    ls = sub.add_parser("list", help="list scenarios and strategies, one line each")
    ls.add_argument("what", nargs="?", choices=["scenarios", "strategies"], default=None,
                    help="only scenarios, or only strategies (with trainable parameters on --backbone)")
    ls.add_argument("--backbone", default="offline:whisper-base",
                    help="backbone the trainable-parameter counts are computed on (default offline:whisper-base)")
    _methods_from(ls)

    run = sub.add_parser("run", help="run a scenario with some strategies")
    run.add_argument("--scenario", default=DEFAULT_SCENARIO, help="scenario name (scenarios/*.yaml) or a YAML path")
    run.add_argument("--strategies", default=None,
                     help="comma-separated strategy names, or 'all' for every registered strategy (default "
                     f"{DEFAULT_STRATEGIES}; with --variants, only the file's variants). A variant of a strategy "
                     "with some config values changed is written NAME[KEY=VALUE,...], values as in YAML, e.g. "
                     "'spt_entire,spt_entire[eval_routing=lid],spt_entire[prompt_length=128]': each is its own "
                     "row, named so (keys sorted) in results, summary, report and compare (README 'Variants and "
                     "profile overrides')")
    run.add_argument("--variants", type=Path, default=None, metavar="FILE.yaml",
                     help="named variants, a YAML mapping 'NAME: {strategy: BASE, config: {KEY: VALUE}}'; each "
                     "runs after the --strategies entries (or where --strategies names it), as row NAME")
    run.add_argument("--profile", default=DEFAULT_PROFILE, help="micro | quick | full (as the scenario defines)")
    run.add_argument("--set", dest="profile_overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a field of the scenario profile for this run (repeatable; n_train, n_test, epochs, "
                     "batch_size, max_new_tokens, prompt_length, ...), e.g. --set n_train=8 --set epochs=1; recorded "
                     "in run.json; a run directory resumes only with the same overrides")
    run.add_argument("--out", type=Path, default=None, help="run directory (default runs/<timestamp>)")
    run.add_argument("--backbone", default=None, help="backbone spec, overriding the profile's "
                     "(offline:whisper-base, tiny:random, a local directory or a hub id)")
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    seeds.add_argument("--seeds", default=None, metavar="0,1,2",
                       help="comma-separated seeds: every strategy runs once per seed; reports give mean ± std "
                       "and bootstrap intervals")
    run.add_argument("--orders", default=None, metavar="K | ORDER;ORDER",
                     help="run every strategy in K orders of the experiences (the scenario's, then its rotations, "
                     "then the other permutations), or in the orders given, e.g. 'eo,ia,ga;ga,ia,eo'; each order is a "
                     "row of its own, STRATEGY@ga>ia>eo (the scenario's own order keeps the plain name), and the report "
                     "averages each measure over orders (README 'Stream orders')")
    run.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    run.add_argument("--processes", type=int, default=1, metavar="N",
                     help="run each job in N processes, one per GPU (data parallel through torch.distributed, "
                     "started with torchrun; README 'One job on several GPUs'). Without GPUs the processes share "
                     "the CPU (gloo), which is for testing")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--no-report", action="store_true", help="skip writing the report at the end")
    run.add_argument("--no-cache", action="store_true",
                     help="compute everything: no decode memo, no encoder-output or cross-attention cache (the "
                     "results are the same; for checking that, and for timing the plain loop)")
    grid = run.add_argument_group("executor", "where the (strategy, seed) jobs run (README, 'Run the grid on a cluster')")
    grid.add_argument("--executor", choices=["local", "ray"], default="local",
                      help="local: one job after another in this process (default); ray: each job a Ray task")
    grid.add_argument("--address", default=None,
                      help="ray: an existing cluster to join (e.g. auto, ray://head:10001); default: start one here")
    grid.add_argument("--workers", type=int, default=None,
                      help="ray, no --address: CPUs the local instance offers (default: all of this machine's)")
    grid.add_argument("--job-cpus", type=float, default=1, help="ray: CPUs per job (also its torch threads; default 1)")
    grid.add_argument("--job-gpus", type=float, default=0,
                      help="ray: GPUs per job (default 0)")
    grid.add_argument("--job-memory-gb", type=float, default=None, help="ray: memory per job, for scheduling")
    grid.add_argument("--retries", type=int, default=2,
                      help="ray: attempts after the first for a job that fails or whose worker dies (default 2)")
    _methods_from(run)

    rep = sub.add_parser("report", help="(re)write summary.csv, report.md, report.html and plots/ of a run")
    rep.add_argument("run_dir", type=Path)

    cmp_ = sub.add_parser("compare", help="one report across run directories (backbones, scenarios, code versions)")
    cmp_.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    cmp_.add_argument("--out", type=Path, required=True, help="directory for the comparison report")

    _tune_parser(sub)
    return p


def _tune_parser(sub) -> None:
    tune = sub.add_parser("tune", help="search each strategy's hyper-parameters on dev sets only (Optuna); the "
                          "winners go to tuned/<scenario>.yaml, which later runs of that scenario and profile use")
    tune.add_argument("--scenario", default=DEFAULT_SCENARIO, help="scenario name or YAML path")
    tune.add_argument("--strategies", required=True, help="comma-separated strategies to tune, one study each")
    tune.add_argument("--profile", default=DEFAULT_PROFILE, help="the profile the defaults are tuned for")
    tune.add_argument("--trials", type=int, default=8, help="trials per strategy (default 8); a re-run with more "
                      "trials goes on from the ones done")
    tune.add_argument("--params", default=None, metavar="lr,rank",
                      help="only these searchable fields (default: every field the strategy's config marks)")
    tune.add_argument("--out", type=Path, default=None,
                      help="the studies' directory (default tuning/<scenario>-<profile>): a run directory and an "
                      "Optuna database per strategy; the same command resumes them")
    tune.add_argument("--write", type=Path, default=None,
                      help="the tuned-defaults file to update (default tuned/<scenario>.yaml)")
    tune.add_argument("--backbone", default=None, help="backbone spec, overriding the profile's")
    tune.add_argument("--seed", type=int, default=0, help="the seed every trial runs with (default 0)")
    tune.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    tune.add_argument("--no-progress", action="store_true", help="no progress bars")
    tune.add_argument("--executor", choices=["local", "ray"], default="local",
                      help="local: trials one after another here (default); ray: Ray Tune runs them, several at once, "
                      "with the same Optuna sampler and study database")
    tune.add_argument("--address", default=None, help="ray: an existing cluster to join (default: start one here)")
    tune.add_argument("--workers", type=int, default=None, help="ray: trials at once (default: as many as fit)")
    tune.add_argument("--job-cpus", type=float, default=1, help="ray: CPUs per trial (default 1)")
    tune.add_argument("--job-gpus", type=float, default=0, help="ray: GPUs per trial (default 0)")
    _methods_from(tune)


def _tune(args, argv: list[str]) -> int:
    from .tune import TuneRequest, tune

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not strategies or len(set(strategies)) != len(strategies):
        raise ValueError(f"--strategies: expected distinct strategy names, got {args.strategies!r}")
    scenario_name = Path(args.scenario).stem
    req = TuneRequest(
        scenario=args.scenario, strategies=strategies, profile=args.profile,
        out_dir=args.out or Path("tuning") / f"{scenario_name}-{args.profile}", trials=args.trials,
        params=[p.strip() for p in args.params.split(",") if p.strip()] if args.params else None,
        backbone=args.backbone, seed=args.seed, device=args.device, progress=not args.no_progress, write=args.write,
        command="python run_suite.py " + " ".join(shlex.quote(a) for a in argv), executor=args.executor,
        ray_address=args.address, workers=args.workers, job_cpus=args.job_cpus, job_gpus=args.job_gpus)
    if args.executor == "local" and (args.address or args.workers is not None):
        raise ValueError("--address and --workers are for --executor ray")
    if args.workers is not None and args.workers < 1 or args.job_cpus <= 0 or args.job_gpus < 0:
        raise ValueError("--workers and --job-cpus must be positive, --job-gpus must not be negative")
    print(f"tuned defaults: {tune(req)}")
    return 0


def _list(args) -> int:
    from .methods import METHODS
    from .scenarios import available_scenarios, scenario_outlines

    if args.what == "scenarios":  # in full: experiences, preservation sets, metric, data source
        import textwrap

        print("Scenarios:")
        for name, o in scenario_outlines().items():
            print(f"  {name}")
            print(textwrap.fill(o["description"], 110, initial_indent=" " * 4, subsequent_indent=" " * 4))
            if "experiences" in o:
                print(f"    experiences:  {' -> '.join(map(str, o['experiences']))}")
                print(f"    preservation: {', '.join(map(str, o['preservation'])) or 'none'}")
                print(f"    metric:       {str(o['metric']).upper()}")
                print(textwrap.fill(f"data:         {o['data_source']}", 110, initial_indent=" " * 4,
                                    subsequent_indent=" " * 18))
        return 0
    if args.what is None:
        print("Scenarios:")
        for name, desc in available_scenarios().items():
            print(f"  {name:<16} {desc}")
    counts: dict[str, str] = {}
    if args.what == "strategies":  # loading a backbone takes seconds: only when strategies are asked for
        from .methods.accounting import trainable_counts

        counts = {k: f"{v:>11,}" for k, v in trainable_counts(args.backbone).items()}
        print(f"Strategies (trainable parameters for one experience on {args.backbone}):")
    else:
        print("Strategies:")
    for name in METHODS.names():
        print(f"  {name:<12} {counts.get(name, ''):>12}  {METHODS.get(name).description}")
        if args.what == "strategies":
            print(f"  {'':<12} {'':>12}  defaults: {_defaults(name)}")
    if args.what == "strategies":
        from .methods.base import SetRoutedMethod

        routed = [n for n in METHODS.names() if issubclass(METHODS.get(n), SetRoutedMethod)]
        print("Variants of any of them (README 'Strategies'; e.g. --strategies \"lora,lora[eval_routing=learned]\"):")
        print("  [eval_routing=lid]      task-agnostic routing by Whisper's language ID")
        print("  [eval_routing=learned]  task-agnostic routing by a classifier learned from each experience's audio")
        print(f"                          (both: set-per-experience strategies, {', '.join(routed)})")
        print("  [lm_weight=0.3]         shallow fusion with an n-gram LM of the experience's text (every strategy)")
        print("  [language_token=new]    CL-MASR's protocol: a new decoder token per unseen language (every strategy)")
    return 0


def _defaults(name: str) -> str:
    """The strategy's hyper-parameters that its baselines/<name>.yaml sets (the rest are the dataclass's)."""
    import dataclasses

    from .methods import METHODS, method_config

    config = dataclasses.asdict(method_config(name))
    plain = dataclasses.asdict(METHODS.get(name).config_class())
    changed = {k: v for k, v in config.items() if plain.get(k) != v}
    return ", ".join(f"{k}={v}" for k, v in changed.items()) or "the config class's"


def _launch_processes(args, argv: list[str], out: Path) -> int:
    """Start this same command in `--processes` processes with torchrun (one machine; for several, run torchrun
    yourself: README). Every process must write to the same run directory, so --out is fixed here."""
    import torch
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    if args.executor != "local":
        raise ValueError("--processes is for --executor local: a Ray job runs in one process (README, "
                         "'One job on several GPUs')")
    on_gpu = torch.cuda.is_available() and not (args.device and args.device.startswith("cpu"))
    if on_gpu and args.processes > torch.cuda.device_count():
        raise ValueError(f"--processes {args.processes}: this machine has {torch.cuda.device_count()} GPU(s), one "
                         "process per GPU")
    child = []
    skip = False
    for a in argv:  # the command without --processes, with --out
        if skip:
            skip = False
        elif a == "--processes":
            skip = True
        elif not a.startswith("--processes="):
            child.append(a)
    if args.out is None:
        child += ["--out", str(out)]
    os.environ["CL_ASR_COMMAND"] = "python run_suite.py " + " ".join(shlex.quote(a) for a in argv)
    try:
        torchrun(["--standalone", f"--nproc-per-node={args.processes}", "-m", "cl_asr.cli", *child])
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values()]
        print(f"error: {len(codes)} of {args.processes} processes failed (exit codes {codes}); see above",
              file=sys.stderr)
        return next((c for c in codes if c > 0), 1)
    return 0


def _strategies_and_overrides(args) -> tuple[list[str], dict, dict]:
    """(--strategies entries, with 'all' expanded and the --variants file's names added; the file's variants;
    the --set overrides), parsed (cl_asr/variants.py); their values are checked by runner.check_request."""
    from .methods import METHODS
    from .variants import load_variants_file, parse_assignment, split_top_level

    named = load_variants_file(args.variants) if args.variants else {}
    text = args.strategies if args.strategies is not None else ("" if named else DEFAULT_STRATEGIES)
    strategies = []
    for entry in split_top_level(text, "--strategies"):
        strategies += METHODS.names() if entry == "all" else [entry]
    strategies += [n for n in named if n not in strategies]
    if not strategies:
        raise ValueError("--strategies names no strategy")
    overrides: dict = {}
    for item in args.profile_overrides:
        key, value = parse_assignment(item, "--set")
        if key in overrides:
            raise ValueError(f"--set {key} is given twice")
        overrides[key] = value
    return strategies, named, overrides


def _run(args, argv: list[str]) -> int:
    from . import distributed
    from .orders import parse as parse_orders
    from .runner import RunRequest

    if args.processes < 1:
        raise ValueError(f"--processes must be at least 1, got {args.processes}")
    if distributed.launched_world_size() > 1 and args.out is None:
        raise ValueError("started by torchrun: give --out, so that every process writes to the same run directory")
    out = args.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.processes > 1 and distributed.launched_world_size() == 1:
        return _launch_processes(args, argv, out)
    strategies, named, profile_overrides = _strategies_and_overrides(args)
    seeds = [0] if args.seed is None else [args.seed]
    if args.seeds is not None:
        try:  # every item an integer: "0,,1" is a typo, not 0,1
            seeds = [int(x) for x in args.seeds.split(",")]
        except ValueError:
            raise ValueError(f"--seeds: expected comma-separated integers such as 0,1,2, got {args.seeds!r}") from None
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"--seeds: expected distinct integers such as 0,1,2, got {args.seeds!r}")
    command = os.environ.get("CL_ASR_COMMAND") or "python run_suite.py " + " ".join(shlex.quote(a) for a in argv)
    req = RunRequest(
        scenario=args.scenario, strategies=strategies, profile=args.profile, out_dir=out, backbone=args.backbone,
        seeds=seeds, device=args.device, progress=not args.no_progress, report=not args.no_report,
        command=command.strip(), caches=not args.no_cache, variants=named, profile_overrides=profile_overrides,
        orders=parse_orders(args.orders) if args.orders is not None else None,
    )
    from .executors import RayOptions, run_grid
    from .runner import canonical_request

    # every name, variant and override checked before anything is written; variants spelled canonically
    req = canonical_request(req)
    from .run_dir import StrategiesFailed

    options = None
    if args.executor == "local":
        for flag in ("address", "workers", "job_memory_gb"):
            if getattr(args, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} is for --executor ray")
    else:
        if args.retries < 0 or args.job_cpus <= 0 or args.job_gpus < 0 or (args.workers is not None and args.workers < 1):
            raise ValueError("--retries and --job-gpus must not be negative, --job-cpus and --workers must be positive")
        if args.address and args.workers is not None:
            raise ValueError("--workers sizes a local Ray instance; with --address the cluster decides")
        options = RayOptions(address=args.address, workers=args.workers, job_cpus=args.job_cpus,
                             job_gpus=args.job_gpus, job_memory_gb=args.job_memory_gb, retries=args.retries,
                             methods_from=[p.resolve() for p in args.methods_from])
    try:
        run_grid(req, args.executor, options)
    except StrategiesFailed as exc:  # the others finished and are recorded
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        distributed.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = _parser().parse_args(argv or ["run"])
    from .config import ConfigError
    from .registry import UnknownNameError

    from .methods import load_methods_from

    try:
        load_methods_from(getattr(args, "methods_from", []))
        if args.command == "list":
            return _list(args)
        if args.command == "report":
            from .report import write_report

            print(f"report: {write_report(args.run_dir)}")
            return 0
        if args.command == "compare":
            from .report import write_comparison

            print(f"report: {write_comparison(args.run_dirs, args.out)}")
            return 0
        if args.command == "tune":
            return _tune(args, argv)
        return _run(args, argv)
    except (ConfigError, UnknownNameError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # finished passes are in the run directory; the lock is released on the way out
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
