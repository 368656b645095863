"""Run directories as a report reads them, and the rules for putting several runs in one report."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..results import read_jsonl, read_run
from .stats import SET_CONTENT, how_sets_differ


@dataclass
class Run:
    label: str  # how the report names this run ("" for a report of one run)
    path: Path
    meta: dict
    results: pd.DataFrame
    predictions: list[dict]

    @property
    def scenario(self) -> str:
        return self.meta["config"]["scenario"]

    def system(self, strategy: str) -> str:
        """The name a strategy of this run has in a report: itself alone, `label/strategy` across runs."""
        return f"{self.label}/{strategy}" if self.label else strategy


def load_run(path: Path, label: str = "") -> Run:
    """The run directory's files; each prediction row gets the content checksum of the set it was evaluated on
    (SET_CONTENT, from run.json's content_checksums, where the run recorded them), which identifies the set
    across runs whatever its utterances' ids."""
    path = Path(path)
    meta, rows = read_run(path)
    preds_path = path / "predictions.jsonl"
    preds = read_jsonl(preds_path) if preds_path.is_file() else []
    content = meta.get("content_checksums") or {}
    for p in preds:
        checksum = content.get(f"{p.get('stream')}/{p['eval_on']}")
        if checksum:
            p[SET_CONTENT] = checksum
    return Run(label, path, meta, pd.DataFrame(rows), preds)


def run_labels(paths: list[Path]) -> list[str]:
    """Short distinct names for run directories: the directory name, with parents added until they differ."""
    paths = [Path(p).resolve() for p in paths]
    if len(set(paths)) != len(paths):
        raise ValueError(f"the same run directory is named twice: {[str(p) for p in paths]}")
    depth = 1
    while True:
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels) or depth > 50:
            return labels
        depth += 1


def check_comparable(runs: list[Run]) -> None:
    """Runs of one scenario must have the same experiences, preservation sets, metric and test sets; otherwise
    their figures measure different things and the comparison is refused, naming the difference. A test set is
    its content where both runs recorded content checksums (the same audio and transcripts are the same set,
    whatever ids the utterances had), else its utterance ids; and its reference transcripts (stats.how_sets_differ)."""
    first = runs[0]
    for run in runs[1:]:
        for key in ("experiences", "preservation", "metric"):
            if run.meta.get(key) != first.meta.get(key):
                raise ValueError(
                    f"cannot compare {first.path} and {run.path}: both ran scenario {run.scenario!r} but their "
                    f"{key} differ ({first.meta.get(key)} vs {run.meta.get(key)})")
    # Every pair of the distinct (content checksum, ids, refs) a set has across the runs: with content checksums
    # in some runs only, "same set" is not transitive, so each is checked against each.
    seen: dict[str, dict[tuple, tuple[dict, Run]]] = {}
    for run in runs:
        for p in run.predictions:
            name = p["eval_on"]
            key = (p.get(SET_CONTENT), tuple(p["ids"]), tuple(p["refs"]))
            if key in seen.setdefault(name, {}):
                continue
            for q, other in seen[name].values():
                what = how_sets_differ(q, p)
                if what:
                    raise ValueError(
                        f"cannot compare {other.path} and {run.path}: test set {name!r} holds different {what} "
                        f"({len(q['ids'])} vs {len(p['ids'])} utterances; e.g. regenerated data, another profile "
                        "or another corpus); compare runs evaluated on the same test sets"
                        + _why_not_by_content(what, q, p, other, run))
            seen[name][key] = (p, run)


def _why_not_by_content(what: str, a: dict, b: dict, run_a: Run, run_b: Run) -> str:
    """Ids differ but the references agree: say which run could not be matched by content."""
    if what != "utterances" or tuple(a["refs"]) != tuple(b["refs"]):
        return ""
    without = " and ".join(dict.fromkeys(str(r.path) for r, p in ((run_a, a), (run_b, b)) if not p.get(SET_CONTENT)))
    return (f". Only the ids differ (the references agree), but {without} recorded no content checksum of the set "
            "(run.json content_checksums, which older runs lack), so the sets cannot be matched by their content: "
            "re-run to compare")


@dataclass
class Progress:
    """Where a run directory stands: every (strategy, seed) asked of it, by state."""

    status: str  # run.json's: complete, incomplete (something failed), running (still running, or killed)
    asked: int  # (strategy, seed) runs asked of the directory that apply to its scenario
    complete: list[tuple[str, int]]
    partial: list[tuple[str, int, int, int]]  # (strategy, seed, result rows written, rows when complete); not failed
    failed: list[tuple[str, int, str]]  # (strategy, seed, what happened)
    missing: list[tuple[str, int]]  # asked for, never started
    cannot_run: list[tuple[str, int, str]]  # declared not to apply to the scenario: not a failure of the run

    @property
    def finished(self) -> bool:
        return self.status == "complete" and not (self.partial or self.failed or self.missing)

    def lines(self) -> list[str]:
        """What is missing or partial, one line each."""
        out = [f"`{s}` (seed {seed}): failed ({what})" for s, seed, what in self.failed]
        out += [f"`{s}` (seed {seed}): partial, {n} of {total} result rows" for s, seed, n, total in self.partial]
        out += [f"`{s}` (seed {seed}): not started" for s, seed in self.missing]
        return out


def progress(meta: dict, results: pd.DataFrame) -> Progress:
    """From run.json's grid and expected row counts (older directories, which did not record them: what they
    have rows or records of) and the rows in results.jsonl."""
    counts = results.groupby(["strategy", "seed"]).size().to_dict() if len(results) else {}
    records = {(r["strategy"], r["seed"]): r for r in meta.get("strategy_runs", [])}
    grid = [tuple(g) for g in meta.get("grid") or dict.fromkeys([*records, *counts])]
    expected = meta.get("expected_rows", {})
    complete, partial, failed, missing, cannot_run = [], [], [], [], []
    for name, seed in grid:
        n, rec = counts.get((name, seed), 0), records.get((name, seed))
        if rec and rec.get("failure", {}).get("kind") == "cannot run":
            cannot_run.append((name, seed, rec["failure"]["reason"]))
            continue
        if rec and rec.get("failure"):  # listed once, as failed, whatever rows it left
            f = rec["failure"]
            failed.append((name, seed, f["kind"] + (f" during {f['during']}" if f.get("during") else "")))
        elif rec and (name not in expected or n == expected[name]):
            complete.append((name, seed))
        elif n:
            partial.append((name, seed, n, expected.get(name, 0)))
        else:
            missing.append((name, seed))
    return Progress(meta.get("status", "unknown"), len(grid) - len(cannot_run), complete, partial, failed, missing,
                    cannot_run)
