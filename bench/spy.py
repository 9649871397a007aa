"""py-spy and /proc around a benchmark: where a process's time went, by phase of the runner.

``Spy(pid, out)`` runs ``py-spy record`` (raw collapsed stacks) on a process until
``stop()``; ``phases(out)`` sorts its samples into the runner's phases (the frames of
docbatch.worker.runner and what they call); ``counters(pid)`` reads a process's CPU
seconds and context switches (over all its threads) from /proc.

    spy = Spy(pool_child(worker.pid), Path("/tmp/w.txt"))
    ...                                    # run a job
    spy.stop()
    print(phases(Path("/tmp/w.txt")))
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))

# The runner's phases: the root-most runner frame of a sample names its group, the
# leaf-most matching frame below it the part. Frame names are py-spy's:
# "qualified.name (path/to/file.py:line)".
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("claim", ("UnitRunner.claim_next (", "UnitRunner.claim (")),
    ("write", ("UnitRunner.finish (", "UnitRunner._fail (")),
    ("compute", ("UnitRunner.compute (",)),
    ("chain", ("UnitRunner.give_back (",)),
]
PARTS: dict[str, list[tuple[str, str]]] = {
    "claim": [
        ("next unit query (dispatch)", "next_units ("),
        ("lease", "Lease.acquire ("),
        ("ledger claim", "claim_unit ("),
        ("load (page maps)", "ModelStage.load ("),
        ("chunking (prepare)", "ModelStage.prepare ("),
    ],
    "write": [
        ("results insert", "ModelStage.write ("),
        ("close unit", "close_unit ("),
        ("accounting", "accounting.py:"),
        ("finalize job", "finalize_job_if_done ("),
        ("lock job", "lock_job ("),
        ("commit + outbox publish", "unit_of_work ("),
        ("lease release", "release ("),
    ],
    "compute": [
        ("model batches", "BatchRunner._run_one ("),
        ("cancel check", "should_stop ("),
    ],
    "chain": [],
}
OUTSIDE = "main thread outside the runner (Celery: receive, ack, events, idle)"


def pool_child(parent: int) -> int:
    """The Celery prefork pool's process (concurrency 1) under a worker's main process."""
    kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    if len(kids) != 1:
        raise RuntimeError(f"worker {parent} has {len(kids)} child processes, expected 1")
    return int(kids[0])


def counters(pid: int) -> dict[str, float]:
    """CPU seconds (user, system) and context switches over every thread of ``pid``."""
    tick = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    out = {"user_s": int(stat[11]) / tick, "sys_s": int(stat[12]) / tick}
    out["ctx_voluntary"] = out["ctx_involuntary"] = 0.0
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    for task in tasks:
        try:
            status = (task / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                out["ctx_voluntary"] += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                out["ctx_involuntary"] += int(line.split()[1])
    out["threads"] = float(len(tasks))
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v if k == "threads" else v - before.get(k, 0.0) for k, v in after.items()}


class Spy:
    """``py-spy record`` on ``pid`` until ``stop()``: raw stacks, idle threads included
    (a thread waiting on Postgres is time the unit spends), 100 samples a second."""

    def __init__(self, pid: int, out: Path, *, native: bool = False, rate: int = 100) -> None:
        self.out = out
        self.rate = rate
        args = [SPY, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
        args += ["--output", str(out), "--idle", "--threads"]
        # --native needs the process paused while it is sampled; Python frames do not.
        args += ["--native"] if native else ["--nonblocking"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # attached
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise RuntimeError(f"py-spy could not attach to {pid}: {err[-500:]}")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def stacks(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def phase_of(frames: list[str]) -> str | None:
    """The runner's phase of a sample ("group: part"); None for a thread of its own
    outside the runner (the heartbeat, the metrics server: they wait beside the unit,
    not in its way)."""
    for depth, frame in enumerate(frames):
        group = next((g for g, needles in GROUPS if any(n in frame for n in needles)), None)
        if group is None:
            continue
        for below in reversed(frames[depth + 1 :]):
            for part, needle in PARTS[group]:
                if needle in below:
                    return f"{group}: {part}"
        return f"{group}: other"
    if any("UnitRunner.run (" in f for f in frames):
        return "chain: other"
    if any("Thread._bootstrap (" in f for f in frames):
        return None
    return OUTSIDE


def phases(path: Path) -> dict[str, int]:
    """Samples per phase (PHASES), largest first."""
    count: collections.Counter[str] = collections.Counter()
    for frames, n in stacks(path):
        if (phase := phase_of(frames)) is not None:
            count[phase] += n
    return dict(count.most_common())


def leaves(path: Path, under: str, top: int = 12) -> tuple[int, int, list[tuple[str, int]]]:
    """(samples, samples with a frame containing ``under``, the leaf frames seen most
    below it, without line numbers)."""
    total = inside = 0
    seen: collections.Counter[str] = collections.Counter()
    for frames, n in stacks(path):
        total += n
        if not any(under in f for f in frames):
            continue
        inside += n
        name, _, where = frames[-1].partition(" (")
        seen[f"{name} ({where.rsplit(':', 1)[0]})"] += n
    return total, inside, seen.most_common(top)


def report(path: Path, rate: int, units: int) -> list[str]:
    """Lines: per phase, seconds and ms per unit (samples / rate)."""
    lines = []
    for name, n in phases(path).items():
        per = 1000 * n / rate / max(1, units)
        lines.append(f"    {name:<66} {n / rate:7.2f}s {per:8.1f} ms/unit")
    return lines


def describe(counts: dict[str, Any]) -> str:
    return (
        f"CPU user {counts['user_s']:.2f}s sys {counts['sys_s']:.2f}s, context switches "
        f"voluntary {counts['ctx_voluntary']:.0f} involuntary {counts['ctx_involuntary']:.0f}, "
        f"{counts['threads']:.0f} threads"
    )
