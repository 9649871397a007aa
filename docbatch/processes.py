"""Child processes in their own process group: start, stop, a free port.

One implementation for everything that starts docbatch processes: ``docbatch run``
(docbatch/local.py), the benchmarks (bench/env.py) and the tests (tests/fixtures.py,
tests/procs.py). Each child leads its own process group, so stopping it stops the
processes it started too (a prefork worker's pool). Example::

    proc = spawn([sys.executable, "-m", "docbatch.cli", "worker", "--task", "tags"],
                 Path("worker.log"), env={"DOCBATCH_QUEUE_PREFIX": "t1"})
    ...
    stop(proc, timeout=15)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

Process = subprocess.Popen[bytes]


def spawn(
    args: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    *,
    cwd: Path | None = None,
    inherit_env: bool = True,
) -> Process:
    """Start ``args`` in a new process group, stdout and stderr to ``log``.

    ``env`` is laid over this process's environment (or, with ``inherit_env=False``, is
    the whole environment).
    """
    base = dict(os.environ) if inherit_env else {}
    with log.open("wb") as out:
        # The child holds its own copy of the descriptor; ours closes here.
        return subprocess.Popen(
            list(args),
            cwd=cwd,
            env={**base, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill(proc: Process) -> None:
    """SIGKILL the whole process group and reap its leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stop(
    proc: Process,
    timeout: float = 15,
    signals: Sequence[signal.Signals] = (signal.SIGTERM,),
) -> None:
    """Send each of ``signals`` to the process group in turn, waiting up to ``timeout``
    seconds after each for the leader to exit; SIGKILL the group if it is still running."""
    for sig in signals:
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout)
            return
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        kill(proc)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
