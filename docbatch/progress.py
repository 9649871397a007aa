"""Terminal progress for a job (stderr): a one-line bar with rate and ETA, and the final
counts as a table. Fed with job status dicts (``GET /v1/jobs/{id}``)."""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any, TextIO

# The rate is measured over this many seconds: results arrive in unit-sized bursts, so
# an instantaneous rate jumps between zero and several times the real one.
RATE_WINDOW_SECONDS = 20.0


def _done(c: dict[str, Any]) -> int:
    return int(c["succeeded"] + c["failed"] + c["cancelled"])


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class RateMeter:
    """Results per second over a sliding window, and the ETA it implies."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> None:
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()

    def rate(self) -> float | None:
        """None until something finished (no rate to speak of yet)."""
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        if d1 <= 0 or t1 <= t0:
            return None
        return max(0.0, (d1 - d0) / (t1 - t0))

    def eta(self, remaining: int) -> float | None:
        rate = self.rate()
        if remaining <= 0:
            return 0.0
        return remaining / rate if rate else None


class ProgressBar:
    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self.meter = RateMeter()
        self._last_line = ""
        self._last_key: tuple[int, str] | None = None

    def update(self, job: dict[str, Any]) -> None:
        counts = job.get("counts", {})
        total = sum(c["total"] for c in counts.values()) or 1
        done = sum(_done(c) for c in counts.values())
        now = time.monotonic()
        self.meter.add(now, done)
        filled = int(self.width * done / total)
        per_task = " ".join(
            f"{t} {_done(c)}/{c['total']}" + (f" ({c['failed']} failed)" if c["failed"] else "")
            for t, c in counts.items()
        )
        rate = self.meter.rate()
        eta = self.meter.eta(total - done)
        speed = f" {rate:.1f}/s" if rate is not None else ""
        left = f" ETA {_duration(eta)}" if eta is not None and done < total else ""
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} "
            f"{per_task} {job['status']} {_duration(now - self.started)}{speed}{left}"
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


COLUMNS = ("succeeded", "failed", "cancelled", "total", "chunks", "tokens")


def counts_table(counts: dict[str, dict[str, Any]], seconds: float | None = None) -> str:
    """The final per-task counts as an aligned text table (one row per task)."""
    headers = ["task", *COLUMNS] + (["docs/s"] if seconds else [])
    rows = []
    for task, c in counts.items():
        row = [task, *(f"{int(c.get(k) or 0):,}" for k in COLUMNS)]
        if seconds:
            row.append(f"{_done(c) / seconds:.1f}")
        rows.append(row)
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def fmt(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([fmt(headers), *(fmt(r) for r in rows)])
