"""A run directory: the only copy of a run's results, opened, checked, appended to and closed in one place.

    results.jsonl      one row per evaluation cell and metric, appended after every evaluation pass
    predictions.jsonl  per evaluation cell: ids, references, hypotheses, per-utterance counts
    run.json           the resolved config, checksums of weights and data, one record per (strategy, seed)
    checkpoints/       a strategy's state after its last finished pass (removed once it is complete)

`RunDirectory.take` makes this run the directory's one owner before anything in it is read or written: a lock
(`.lock`, filelock) held for the whole run, with who holds it in `.owner.json` (pid, host, since when). A second
run on the same directory is refused at once, naming the holder; the kernel releases the lock of a process that
dies (SIGKILL included), so the next run takes over a stale `.owner.json` and says so. Only the main process of
a run takes it (torchrun's other processes never write); a Ray job locks its own job directory, the driver the
run directory. `RunDirectory.open` then mends a half-written last line, reads what is there and refuses, before
anything changes, a directory made for another scenario, profile or backbone, other data or weights, or another
strategy config. Both executors use it: the local one writes rows as passes finish, the Ray one writes the
gathered jobs whole.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from . import distributed
from .log import log
from .results import append_jsonl, read_jsonl, repair_jsonl, write_json_atomic, write_jsonl_atomic
from .variants import file_component


@dataclasses.dataclass
class StrategyRun:
    """What run.json records of one (strategy, seed): its costs when it ran, or why it did not (`failure`)."""

    strategy: str
    seed: int
    description: str = ""
    config: dict = dataclasses.field(default_factory=dict)
    # {"kind": "cannot run" | "raised" | "job failed", "reason": ...; "raised": "during", "traceback"}
    failure: dict | None = None
    trainable_params: int | None = None
    stored_params_per_experience: int | None = None
    stored_bytes: int | None = None  # the largest checkpoint written after an experience
    backbone_params: int | None = None
    train_seconds: float | None = None
    train_seconds_per_experience: list[float] | None = None
    eval_seconds: float | None = None
    peak_memory_mb: float | None = None
    timed_on: list[str] | None = None  # the devices its seconds were measured on (cl_asr/env_info.py timing_device)
    processes: int | None = None
    decodes: dict | None = None
    eval_routing: str | None = None
    joint: bool | None = None
    single_task: bool | None = None  # the single-task fine-tuning reference (written only when true)
    info: dict | None = None
    training_faults: list | None = None  # steps skipped for NaN/inf losses, experiences ended early
    variant_of: str | None = None  # a variant (cl_asr/variants.py): its base strategy and the values it changed
    overrides: dict | None = None

    def to_json(self) -> dict:
        keep = {"strategy", "seed", "description", "config", "eval_routing"}  # written even when empty / None
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None or (k in keep and self.failure is None)}


def check_writable(out: Path) -> None:
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


def completed(rows: list[dict], expected: dict[str, int]) -> set:
    """(strategy, seed) pairs whose result rows are all there; `expected` rows per strategy."""
    counts: dict[tuple, int] = {}
    for r in rows:
        counts[(r["strategy"], r["seed"])] = counts.get((r["strategy"], r["seed"]), 0) + 1
    return {k for k, n in counts.items() if n == expected.get(k[0])}


class StrategiesFailed(RuntimeError):
    """Some (strategy, seed) runs raised; the others finished and are recorded. The command exits non-zero."""


class RunDirectoryInUse(ValueError):
    """Another process owns the run directory."""


class RunDirectory:
    def __init__(self, path: Path, writer: bool | None = None):
        self.path = Path(path)
        self._writer = writer  # None: the main process writes (cl_asr.distributed), decided when asked
        self._lock: FileLock | None = None
        self._created = False
        self.results, self.predictions, self.meta_path = (self.path / "results.jsonl", self.path / "predictions.jsonl",
                                                          self.path / "run.json")
        self.meta: dict = {"strategy_runs": []}
        self.complete: set = set()  # (strategy, seed): every row written and the costs recorded
        self.started: set = set()  # (strategy, seed): rows to keep or mend

    @property
    def writer(self) -> bool:
        return distributed.is_main() if self._writer is None else self._writer

    # -- ownership -------------------------------------------------------------------------------------------
    def take(self, command: str = "") -> None:
        """Check the directory is writable and become its one owner (see the module doc); the main process only."""
        if not self.writer:
            return
        check_writable(self.path)
        self._created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.path / ".lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = self._owner()
            who = (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}" if holder
                   else "another process")
            raise RunDirectoryInUse(f"{self.path} is in use by {who} (command: {holder.get('command', '?')}): "
                                    "wait for that run to end, or use another --out directory") from None
        self._lock = lock
        stale = self._owner()
        if stale:
            log(f"{self.path}: took over from pid {stale.get('pid')} on {stale.get('host')} (since "
                f"{stale.get('since')}), which ended without releasing it (killed?)")
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "command": command}
        write_json_atomic(self.path / ".owner.json", owner)

    def release(self) -> None:
        """Give the directory up; a directory this run created and wrote nothing else to is removed again."""
        if self._lock is None:
            return
        (self.path / ".owner.json").unlink(missing_ok=True)
        self._lock.release()
        self._lock = None
        if self._created and {p.name for p in self.path.iterdir()} <= {".lock"}:
            (self.path / ".lock").unlink(missing_ok=True)
            self.path.rmdir()

    def _owner(self) -> dict:
        try:
            return json.loads((self.path / ".owner.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def checkpoint(self, strategy: str, seed: int) -> Path:
        """A variant's name (spt_decoder[lr=0.1]) is no file name: variants.file_component makes it one."""
        return self.path / "checkpoints" / f"{file_component(strategy)}_seed{seed}.pt"

    # -- opening ---------------------------------------------------------------------------------------------
    def open(self, config: dict, checksums: dict, strategy_configs: dict[str, dict], expected_rows: dict[str, int],
             facts: dict) -> "RunDirectory":
        """Mend, read and check the directory (see the module doc), then record `config` and `facts` in run.json."""
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)
        for path in (self.results, self.predictions):  # a crash mid-append leaves at most a half-written last line
            dropped = repair_jsonl(path) if self.writer else 0
            if dropped:
                log(f"repaired {path.name}: dropped a half-written last line ({dropped} bytes) left by an interrupted run")
        distributed.barrier()  # the others read the files once the main process has mended them
        existing = read_jsonl(self.results) if self.results.is_file() else []
        rows_complete = completed(existing, expected_rows)
        self.started = {(r["strategy"], r["seed"]) for r in existing}
        if self.meta_path.is_file():
            self.meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            self._check_compatible(config, checksums, strategy_configs)
        meta = self.meta
        meta["checksums"] = checksums
        meta.setdefault("strategy_runs", [])
        self.complete = rows_complete & {(s["strategy"], s["seed"]) for s in meta["strategy_runs"] if not s.get("failure")}
        old = meta.get("config", {})
        config["strategies"] = {**old.get("strategies", {}), **config["strategies"]}
        config["variants"] = {**old.get("variants", {}), **config.get("variants", {})}
        old_seeds = old.get("seeds", [old.get("seed", 0)] if old else [])
        asked = list(config["seeds"])  # this command's
        config["seeds"] = sorted(set(old_seeds) | set(config["seeds"]))  # a directory may gather seeds over calls
        # Every (strategy, seed) any command asked of this directory, and the rows each must have: what a report
        # needs to say which are missing or partial (cl_asr/report/load.py: progress)
        grid = [list(g) for g in meta.get("grid", [])]
        grid += [[n, s] for s in asked for n in expected_rows if [n, s] not in grid]
        meta["grid"] = grid
        meta["expected_rows"] = {**meta.get("expected_rows", {}), **expected_rows}
        meta.update({"config": config, "status": "running",
                     "started": meta.get("started") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     **facts})
        distributed.barrier()  # every process has read the directory as it was: from here only the main one writes
        self._write_meta()
        return self

    def _check_compatible(self, config: dict, checksums: dict, strategy_configs: dict[str, dict]) -> None:
        old = self.meta.get("config", {})
        for key in ("scenario", "profile", "backbone"):
            if old.get(key) != config[key]:
                raise ValueError(f"{self.path} already holds a run with {key}={old.get(key)!r}, not {config[key]!r}: "
                                 "use another --out directory")
        overrides = config.get("profile_overrides") or {}
        if (old.get("profile_overrides") or {}) != overrides:  # --set: another profile, in effect
            raise ValueError(f"{self.path} already holds a run with profile overrides (--set) "
                             f"{old.get('profile_overrides') or 'none'}, not {overrides or 'none'}: use another --out "
                             "directory")
        for name, variant in (config.get("variants") or {}).items():  # a variants file's name, redefined
            if name in old.get("variants", {}) and old["variants"][name] != variant:
                raise ValueError(f"{self.path} holds variant {name} as {old['variants'][name]}, not {variant}: "
                                 "give the variant another name, or use another --out directory")
        old_sums = self.meta.get("checksums")
        if old_sums and old_sums != checksums:
            changed = (["backbone weights"] if old_sums.get("backbone") != checksums["backbone"] else []) + [
                k for k in sorted(set(old_sums.get("data", {})) | set(checksums["data"]))
                if old_sums.get("data", {}).get(k) != checksums["data"].get(k)]
            raise ValueError(f"{self.path} was run on other data or weights than this command now has (changed: "
                             f"{', '.join(changed)}): resuming would mix results; use another --out directory")
        for done in self.meta.get("strategy_runs", []):  # skipping a finished strategy is only right if nothing changed
            name = done["strategy"]
            if name in strategy_configs and not done.get("failure") and done["config"] != strategy_configs[name]:
                raise ValueError(f"{self.path} holds {name} (seed {done['seed']}) run with config {done['config']}, "
                                 f"which differs from the current {strategy_configs[name]}: use another --out directory")

    # -- a strategy's rows -----------------------------------------------------------------------------------
    def resume_rows(self, name: str | list[str], seed: int, ckpt: dict | None, rows_per_pass: int,
                    passes: int) -> dict | None:
        """Make the results files hold exactly the passes a strategy finished before its checkpoint, plus the
        checkpoint's own pass (appended if a crash came before its rows were); drop anything else of it.
        Returns the checkpoint, or None (start over) when there is none or the files do not match it.
        `name` may list a row and the decoding twins whose rows its passes write too (runner.evaluate_as_twin)."""
        rows = read_jsonl(self.results) if self.results.is_file() else []
        preds = read_jsonl(self.predictions) if self.predictions.is_file() else []
        names = [name] if isinstance(name, str) else list(name)
        rows_per_pass, passes = rows_per_pass * len(names), passes * len(names)
        mine = lambda r: r["strategy"] in names and r["seed"] == seed  # noqa: E731
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
                log(f"{names[0]} (seed {seed}): the results files do not match its checkpoint; starting it over")
                ckpt = None
        distributed.barrier()  # every process decided from the same files before the main one rewrites them
        if self.writer and kept_rows != rows:
            write_jsonl_atomic(self.results, kept_rows)
        if self.writer and kept_preds != preds:
            write_jsonl_atomic(self.predictions, kept_preds)
        return ckpt

    def append(self, rows: list[dict], preds: list[dict]) -> None:
        if self.writer:
            append_jsonl(self.results, rows)
            append_jsonl(self.predictions, preds)

    # -- run.json ----------------------------------------------------------------------------------------------
    def record(self, run: StrategyRun) -> None:
        """Record a strategy's outcome (replacing an earlier record of the same strategy and seed)."""
        runs = [s for s in self.meta["strategy_runs"] if (s["strategy"], s["seed"]) != (run.strategy, run.seed)]
        variant = self.meta.get("config", {}).get("variants", {}).get(run.strategy)
        if variant and run.variant_of is None:  # what makes it a variant, next to its costs
            run = dataclasses.replace(run, variant_of=variant["strategy"], overrides=variant["overrides"])
        self.meta["strategy_runs"] = [*runs, run.to_json()]
        self._write_meta()

    def finish(self, complete: bool = True, **facts) -> None:
        """Every strategy ran (`complete`: and none failed): status, finishing time and `facts` (timings,
        speed) into run.json."""
        if not self.writer:
            return
        checkpoints = self.path / "checkpoints"
        if checkpoints.is_dir() and not any(checkpoints.iterdir()):
            checkpoints.rmdir()
        self.meta.update({"status": "complete" if complete else "incomplete", "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          **facts})
        self._write_meta()

    def write_whole(self, rows: list[dict], preds: list[dict], meta: dict) -> None:
        """Replace the directory's files at once (the Ray executor's gathering): each file written atomically."""
        self.meta = meta
        write_jsonl_atomic(self.results, rows)
        write_jsonl_atomic(self.predictions, preds)
        self._write_meta()

    def _write_meta(self) -> None:
        if self.writer:
            write_json_atomic(self.meta_path, self.meta)
