"""What every benchmark records beside its numbers: the command, the machine and the date."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import datetime, timezone

import torch


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def provenance(module: str) -> dict:
    """`module` is the benchmark's `__spec__.name`: the command is recorded as `python -m module ...`."""
    command = f"python -m {module} " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return {"command": command, "machine": machine(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
