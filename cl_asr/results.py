"""Results files of a run directory, and how they are written so that a crash never leaves half a file.

  results.jsonl     one row per evaluation cell and metric (the error matrix, long format)
  predictions.jsonl one row per evaluation cell: ids, references and hypotheses (recompute any figure)
  run.json          config, git commit, package versions, device, timings, per-strategy costs
Appends are whole lines written and fsync'd at once; JSON documents are replaced atomically (temp + rename).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

RESULT_FIELDS = ("scenario", "strategy", "seed", "trained_through", "eval_on", "metric", "value", "edits",
                 "ref_tokens", "n_utts")


def write_text_atomic(path: Path, text: str) -> None:
    """Replace a file as a whole: write a temporary file beside it, fsync, rename over it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; results are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # e.g. a full disk: name the file; the old one is still whole
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str))


def write_jsonl_atomic(path: Path, rows: Iterable[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if not payload:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:  # a torn line this leaves is dropped by repair_jsonl on resume
        raise OSError(exc.errno, f"cannot append to {path}: {exc.strerror or exc}") from exc


def repair_jsonl(path: Path) -> int:
    """Drop a half-written last line (a crash during `append_jsonl`); return the bytes dropped (0: intact).
    Only the tail can be half-written: a bad line anywhere else is corruption, reported by read_jsonl."""
    path = Path(path)
    if not path.is_file():
        return 0
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1  # end of the last complete line (0 if there is none)
    tail = data[cut:]
    if tail.strip():
        try:  # a complete JSON document without its newline is kept whole
            json.loads(tail)
            with open(path, "ab") as f:
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
            return 0
        except ValueError:
            pass
    elif not tail:
        return 0
    with open(path, "r+b") as f:
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    return len(tail)


def read_jsonl(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such results file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not a JSON line ({exc})") from exc
    return rows


def read_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """(run.json, results rows) of a run directory, with a clear error for anything missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    meta_path = run_dir / "run.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: missing (is {run_dir} a cl_asr run directory?)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    rows = read_jsonl(run_dir / "results.jsonl")
    for i, row in enumerate(rows, 1):
        missing = [k for k in RESULT_FIELDS if k not in row]
        if missing:
            raise ValueError(f"{run_dir / 'results.jsonl'} row {i}: missing field(s) {missing}")
    return meta, rows
