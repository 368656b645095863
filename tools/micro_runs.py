"""Behaviour kept across a refactor: micro runs of every built-in strategy on every synthetic scenario, here and
at another commit, compared byte for byte.

    python tools/micro_runs.py run OUT_DIR                # this checkout's micro runs into OUT_DIR/<scenario>/
    python tools/micro_runs.py compare A_DIR B_DIR        # exit 1 unless results/predictions are byte-identical
    python tools/micro_runs.py against COMMIT             # both of the above, COMMIT checked out in a worktree
                                                          # (the strategies COMMIT registers, on both sides)

Only results.jsonl and predictions.jsonl are compared: run.json holds timings, paths and the commit. The
real-corpus scenarios need data a user has; the corpus builder they share is run here as `fleurs_unseen` on a
generated local copy in FLEURS' own layout (tones of different pitch, deterministic). cv_clmasr, mls, ascend and
librimix use the same builder with other loaders, which their fixture tests cover.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SCENARIOS = ("languages", "code_switching", "speakers", "text_domains", "fleurs_unseen")
FLEURS_CONFIGS = ("en_us", "de_de", "es_419", "ast_es", "ckb_iq", "kea_sn")
COMPARED = ("results.jsonl", "predictions.jsonl")
ROOT = Path(__file__).resolve().parents[1]


def fleurs_fixture(root: Path) -> Path:
    """A small local FLEURS copy (header-less TSV + audio/<split>/*.wav per config) for the fleurs_unseen micro run."""
    import numpy as np
    import soundfile as sf

    for c, config in enumerate(FLEURS_CONFIGS):
        for split in ("train", "test"):
            lines = []
            for i in range(5):
                # test tones a few Hz off the training ones: the same audio in both splits is a leak, refused
                seconds, freq = 0.4 + 0.1 * i, 150.0 + 40 * c + 15 * i + (7.0 if split == "test" else 0.0)
                t = np.arange(int(seconds * 16_000)) / 16_000
                wav = root / config / "audio" / split / f"{c}{i}{len(split)}.wav"
                wav.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(wav), (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16_000)
                raw = f"Frase {config} {split} {i}."
                lines.append(f"{100 * c + i}\t{wav.name}\t{raw}\t{raw.lower().strip('.')}\t{' '.join(raw.lower())} |"
                             f"\t{len(t)}\tFEMALE")
            (root / config / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def registered(checkout: Path) -> str:
    """The strategies a checkout registers, comma-separated in registry order (what its `--strategies all` runs)."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    code = "from cl_asr.methods import METHODS; print(','.join(METHODS.names()))"
    return subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, check=True, capture_output=True,
                          text=True).stdout.strip().splitlines()[-1]


def run_all(checkout: Path, out: Path, strategies: str = "all") -> None:
    env = {**os.environ, "PYTHONPATH": str(checkout)}  # the checkout's package, not the installed one
    env["FLEURS_DIR"] = str(fleurs_fixture(out / "fleurs_data"))
    for scenario in SCENARIOS:
        cmd = [sys.executable, str(checkout / "run_suite.py"), "run", "--scenario", scenario, "--strategies", strategies,
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
            # the strategies the older commit has: strategies added since have nothing to be compared with
            names = registered(tmp / "ref")
            run_all(tmp / "ref", tmp / "before", names)
            run_all(ROOT, tmp / "after", names)
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
