"""The run's log lines: `[cl_asr HH:MM:SS] message`, printed by the main process only (with several processes,
cl_asr.distributed, it speaks for all of them)."""
from __future__ import annotations

from datetime import datetime

from . import distributed


def log(msg: str) -> None:
    if not distributed.is_main():
        return
    print(f"[cl_asr {datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)
