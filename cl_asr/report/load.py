"""Run directories as a report reads them, and the rules for putting several runs in one report."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..results import read_jsonl, read_run


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
    path = Path(path)
    meta, rows = read_run(path)
    preds_path = path / "predictions.jsonl"
    preds = read_jsonl(preds_path) if preds_path.is_file() else []
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
    """Runs of one scenario must have the same experiences, preservation sets, metric and test utterances;
    otherwise their figures measure different things and the comparison is refused, naming the difference."""
    first = runs[0]
    for run in runs[1:]:
        for key in ("experiences", "preservation", "metric"):
            if run.meta.get(key) != first.meta.get(key):
                raise ValueError(
                    f"cannot compare {first.path} and {run.path}: both ran scenario {run.scenario!r} but their "
                    f"{key} differ ({first.meta.get(key)} vs {run.meta.get(key)})")
    seen: dict[str, tuple] = {}
    for run in runs:
        for p in run.predictions:
            test_set = (tuple(p["ids"]), tuple(p["refs"]))
            name = p["eval_on"]
            if name not in seen:
                seen[name] = (test_set, run.path)
            elif seen[name][0] != test_set:
                other = seen[name][1]
                what = "utterances" if seen[name][0][0] != test_set[0] else "reference transcripts"
                raise ValueError(
                    f"cannot compare {other} and {run.path}: test set {name!r} holds different {what} "
                    f"({len(seen[name][0][0])} vs {len(test_set[0])} utterances; e.g. regenerated data, another "
                    "profile or another corpus); compare runs evaluated on the same test sets")
