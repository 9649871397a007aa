"""A one-line progress bar for the terminal (stderr), fed with job status dicts."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class ProgressBar:
    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self._last_line = ""
        self._last_key: tuple[int, str] | None = None

    def update(self, job: dict[str, Any]) -> None:
        counts = job.get("counts", {})
        total = sum(c["total"] for c in counts.values()) or 1
        done = sum(c["succeeded"] + c["failed"] + c["cancelled"] for c in counts.values())
        filled = int(self.width * done / total)
        per_task = " ".join(
            f"{t} {c['succeeded'] + c['failed'] + c['cancelled']}/{c['total']}"
            + (f" ({c['failed']} failed)" if c["failed"] else "")
            for t, c in counts.items()
        )
        elapsed = time.monotonic() - self.started
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} "
            f"{per_task} {job['status']} {elapsed:.0f}s"
        )
        if self.tty:
            self.stream.write("\r" + line.ljust(len(self._last_line)))
        elif (done, job["status"]) != self._last_key:
            self.stream.write(line + "\n")
            self._last_key = (done, job["status"])
        self.stream.flush()
        self._last_line = line

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
