"""Shared by the tests: the command line in a subprocess, as a user would run it; a Common Voice-layout fixture;
a function that fails once (a crash mid-run, for the resume tests)."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_suite(*args, cwd=REPO, env=None, timeout=1200) -> subprocess.CompletedProcess:
    """`python run_suite.py ARGS` in `cwd` (the repository by default), with `env` added to this environment."""
    return subprocess.run([sys.executable, str(REPO / "run_suite.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def fail_once(monkeypatch, module, name: str, when, message: str) -> None:
    """Replace `module.name` by a function that raises RuntimeError(message) the first time `when(*args)` holds
    for its positional arguments, and otherwise calls the real one."""
    real = getattr(module, name)
    state = {"raised": False}

    def flaky(*args):
        if when(*args) and not state["raised"]:
            state["raised"] = True
            raise RuntimeError(message)
        return real(*args)

    monkeypatch.setattr(module, name, flaky)


# A one-experience corpus scenario over a Common Voice-layout fixture written by write_common_voice_split
COMMON_VOICE_SCENARIO = """\
name: cv_fixture
builder: corpus
description: Common Voice fixture
data_source: a Common Voice-layout fixture in tmp
metric: wer
base_languages: []
experiences:
  - {{name: eo, language: eo, loader: common_voice, args: {{root: "{root}", locale: eo}}, decode_language: es}}
profiles:
  micro: {{backbone: tiny:random, n_train: 3, n_test: 3, epochs: 1, batch_size: 2, max_new_tokens: 4,
          encoder_window_seconds: 5, lid_utterances: 2}}
"""


def write_common_voice_split(root, split, rows):
    """ROOT/eo/{split}.tsv and its clips; rows: (clip file, client id, sentence, tone frequency in Hz)."""
    import numpy as np
    import soundfile as sf

    base = Path(root) / "eo"
    (base / "clips").mkdir(parents=True, exist_ok=True)
    lines = ["client_id\tpath\tsentence"]
    t = np.arange(int(0.3 * 16_000)) / 16_000
    for clip, client, sentence, freq in rows:
        sf.write(str(base / "clips" / clip), (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16_000)
        lines.append(f"{client}\t{clip}\t{sentence}")
    (base / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def strategy_rows(out, name, what="results"):
    """One strategy's rows of a run directory's results.jsonl (or predictions.jsonl), in file order."""
    import json

    lines = (Path(out) / f"{what}.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["strategy"] == name]
