"""``docbatch maintenance``: the process that always consumes the maintenance queue.

docbatch maintenance --concurrency 2
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from docbatch.commands.common import command


def cmd_maintenance(args: argparse.Namespace) -> int:
    # No task: this process never loads a model. It is what always consumes the maintenance
    # queue (schedule ticks, reconcile passes, cancel sweeps): the model and extract workers
    # also consume it while they run, but they scale to zero when idle, and then nothing
    # fires a schedule or republishes a lost unit (issue 27).
    os.environ.pop("DOCBATCH_WORKER_TASK", None)
    from docbatch.schema.settings import get_settings

    get_settings.cache_clear()
    from docbatch.worker.app import app

    s = get_settings()
    from docbatch.worker.metrics import start_server

    start_server(s.worker_metrics_port, gpu=False)  # reconciler passes, what they sent again
    argv = [
        "worker",
        "-Q",
        s.maintenance_queue,
        "--pool",
        "threads",
        "--concurrency",
        str(args.concurrency),
        "--hostname",
        f"maintenance-{os.getpid()}@%h",
        "--loglevel",
        args.loglevel,
        "-E",
    ]
    app.worker_main(argv)
    return 0


def register(sub: Any) -> None:
    sp = command(
        sub,
        "maintenance",
        "consume the maintenance queue: schedule ticks, the reconciler, cancel sweeps "
        "(runs no model; keep one running, model workers may scale to zero)",
        ["docbatch maintenance", "docbatch maintenance --concurrency 4 --loglevel DEBUG"],
        client=False,
    )
    sp.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="threads (a slow schedule tick does not hold up a reconcile pass); default 2",
    )
    sp.add_argument(
        "--loglevel", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)"
    )
    sp.set_defaults(func=cmd_maintenance)
