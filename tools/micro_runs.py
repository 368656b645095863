"""Behaviour kept across a refactor: micro runs of every built-in strategy on every synthetic scenario, here and
at another commit, compared byte for byte.

    python tools/micro_runs.py run OUT_DIR                # this checkout's micro runs into OUT_DIR/<scenario>/
    python tools/micro_runs.py compare A_DIR B_DIR        # exit 1 unless results/predictions are byte-identical
    python tools/micro_runs.py against COMMIT             # both of the above, COMMIT checked out in a worktree

Only results.jsonl and predictions.jsonl are compared: run.json holds timings, paths and the commit. The
real-corpus scenarios (fleurs_unseen, cv_clmasr, mls, ascend, librimix) need local data and are covered by
their fixture tests instead.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SCENARIOS = ("languages", "code_switching", "speakers", "text_domains")
COMPARED = ("results.jsonl", "predictions.jsonl")
ROOT = Path(__file__).resolve().parents[1]


def run_all(checkout: Path, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(checkout)}  # the checkout's package, not the installed one
    for scenario in SCENARIOS:
        cmd = [sys.executable, str(checkout / "run_suite.py"), "run", "--scenario", scenario, "--strategies", "all",
               "--profile", "micro", "--out", str(out / scenario), "--no-progress", "--no-report"]
        print(f"[{checkout.name}] {scenario} ...", flush=True)
        subprocess.run(cmd, cwd=checkout, env=env, check=True, stdout=subprocess.DEVNULL)


def compare(a: Path, b: Path) -> list[str]:
    """Names of the files that differ (or exist on one side only)."""
    differ = []
    for scenario in SCENARIOS:
        for name in COMPARED:
            fa, fb = a / scenario / name, b / scenario / name
            if not fa.exists() or not fb.exists() or fa.read_bytes() != fb.read_bytes():
                differ.append(f"{scenario}/{name}")
    return differ


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run").add_argument("out", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    sub.add_parser("against").add_argument("commit")
    args = p.parse_args(argv)
    if args.command == "run":
        run_all(ROOT, args.out)
        return 0
    if args.command == "against":
        tmp = Path(tempfile.mkdtemp(prefix="micro_runs_"))
        subprocess.run(["git", "worktree", "add", "--detach", str(tmp / "ref"), args.commit], cwd=ROOT, check=True)
        try:
            run_all(tmp / "ref", tmp / "before")
            run_all(ROOT, tmp / "after")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tmp / "ref")], cwd=ROOT, check=False)
        args.a, args.b = tmp / "before", tmp / "after"
    differ = compare(args.a, args.b)
    for name in differ:
        print(f"DIFFERS: {name}")
    print("byte-identical" if not differ else f"{len(differ)} file(s) differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
