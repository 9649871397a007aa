"""``docbatch api|worker|webhooks|beat|migrate``: the processes of a deployment.

docbatch migrate && docbatch api --port 8000
docbatch worker --task summarize ; docbatch worker --task extract
docbatch webhooks ; docbatch beat
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

from docbatch.commands.common import UsageError, command


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from docbatch.schema.logs import configure as configure_logs
    from docbatch.schema.migrate import upgrade, wait_for_database
    from docbatch.schema.settings import get_settings

    s = get_settings()
    json_logs = configure_logs(s.log_format)
    if args.migrate:
        wait_for_database(s.database_url)
        upgrade(s.database_url)
    from uvicorn.config import LOGGING_CONFIG

    uvicorn.run(
        "docbatch.api.app:app",
        host=args.host or s.api_host,
        port=args.port or s.api_port,
        workers=args.workers,
        log_level="info",
        timeout_keep_alive=s.api_keep_alive_seconds,
        # JSON: uvicorn's lines go through the root logger; the api writes its own
        # request line (with the request id and tenant) instead of uvicorn's access line.
        log_config=None if json_logs else LOGGING_CONFIG,
        access_log=not json_logs,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from docbatch.schema.settings import TASKS, get_settings
    from docbatch.schema.tables import EXTRACT

    if bool(args.task) == bool(args.deployment):
        raise UsageError("give --task T (T's default deployment) or --deployment NAME")
    # A task's name is the name of its default deployment.
    stage = args.deployment or args.task
    # Through the environment: the pool's processes read it as Settings.worker_task.
    os.environ["DOCBATCH_WORKER_TASK"] = stage
    get_settings.cache_clear()
    s = get_settings()
    if args.task and args.task not in (*TASKS, EXTRACT):
        raise UsageError(f"--task must be one of {', '.join((*TASKS, EXTRACT))}")
    if args.deployment and not s.is_deployment(args.deployment):
        raise UsageError(
            f"unknown deployment {args.deployment!r}; deployments: {', '.join(s.fleet)} "
            "(DOCBATCH_DEPLOYMENTS, DOCBATCH_DEPLOYMENTS_FILE)"
        )
    pool_metrics = stage == EXTRACT and s.worker_metrics_port > 0
    if pool_metrics and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # The extract worker's children (one per core) share one /metrics, served by
        # this process; set before anything imports prometheus_client.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="docbatch-metrics-")
    from docbatch.worker.app import app

    if pool_metrics:
        from docbatch.worker.metrics import serve_pool

        serve_pool(s.worker_metrics_port)
    queues = [s.queue_for(stage)] + ([] if args.no_maintenance else [s.maintenance_queue])
    # A model worker is one process per GPU; the extract stage (CPU, no model) takes one
    # process per core unless told otherwise.
    concurrency = args.concurrency or (
        len(os.sched_getaffinity(0)) if stage == EXTRACT and args.pool == "prefork" else 1
    )
    argv = [
        "worker",
        "-Q",
        ",".join(queues),
        "--concurrency",
        str(concurrency),
        "--pool",
        args.pool,
        "--hostname",
        f"{stage}-{os.getpid()}@%h",
        "--loglevel",
        args.loglevel,
        "-E",
    ]
    app.worker_main(argv)
    return 0


def cmd_webhooks(args: argparse.Namespace) -> int:
    # No task: this process never loads a model (docbatch.worker.tasks loads one only for a task).
    os.environ.pop("DOCBATCH_WORKER_TASK", None)
    from docbatch.schema.settings import get_settings

    get_settings.cache_clear()
    from docbatch.worker.app import app

    s = get_settings()
    from docbatch.worker.metrics import start_server

    start_server(s.worker_metrics_port, gpu=False)  # deliveries: attempts, failures, lag
    argv = [
        "worker",
        "-Q",
        s.webhook_queue,
        "--pool",
        "threads",
        "--concurrency",
        str(args.concurrency or s.webhook_concurrency),
        "--hostname",
        f"webhooks-{os.getpid()}@%h",
        "--loglevel",
        args.loglevel,
        "-E",
    ]
    app.worker_main(argv)
    return 0


def cmd_beat(args: argparse.Namespace) -> int:
    from docbatch.worker.app import app

    schedule = args.schedule or os.path.join(tempfile.gettempdir(), "docbatch-beat-schedule")
    app.start(["beat", "--loglevel", args.loglevel, "--schedule", schedule])
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from docbatch.schema.migrate import upgrade, wait_for_database
    from docbatch.schema.settings import get_settings

    url = get_settings().database_url
    wait_for_database(url, timeout=args.wait)
    upgrade(url)
    print("database is at the latest revision", file=sys.stderr)
    return 0


def _loglevel(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--loglevel", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)"
    )


def register(sub: Any) -> None:
    sp = command(
        sub,
        "api",
        "run the HTTP api (uvicorn)",
        ["docbatch api --migrate", "docbatch api --host 0.0.0.0 --port 8000 --workers 4"],
        client=False,
    )
    sp.add_argument("--host", help="address to listen on (default: DOCBATCH_API_HOST)")
    sp.add_argument("--port", type=int, help="port to listen on (default: DOCBATCH_API_PORT)")
    sp.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    sp.add_argument("--migrate", action="store_true", help="wait for the db and migrate first")
    sp.set_defaults(func=cmd_api)

    sp = command(
        sub,
        "worker",
        "run a worker pinned to one deployment's model (or the extract stage)",
        [
            "docbatch worker --task summarize",
            "docbatch worker --deployment e5",
            "docbatch worker --task extract --concurrency 4",
        ],
        client=False,
    )
    sp.add_argument("--task", help="a task (its default deployment), or extract (files to text)")
    sp.add_argument(
        "--deployment", help="a deployment's name (DOCBATCH_DEPLOYMENTS): its model and queue"
    )
    sp.add_argument(
        "--pool",
        default="prefork",
        choices=["prefork", "solo"],
        help="Celery pool: prefork (default; the model in a child process) or solo",
    )
    sp.add_argument(
        "--concurrency",
        type=int,
        help="processes; default 1 (one model per GPU), for --task extract one per core",
    )
    _loglevel(sp)
    sp.add_argument(
        "--no-maintenance",
        action="store_true",
        help="do not consume the maintenance queue (reconciler)",
    )
    sp.set_defaults(func=cmd_worker)

    sp = command(
        sub,
        "webhooks",
        "send webhook deliveries (runs no model; one or more per deployment)",
        ["docbatch webhooks --concurrency 16"],
        client=False,
    )
    sp.add_argument(
        "--concurrency", type=int, help="deliveries at once (default: DOCBATCH_WEBHOOK_CONCURRENCY)"
    )
    _loglevel(sp)
    sp.set_defaults(func=cmd_webhooks)

    sp = command(
        sub,
        "beat",
        "run the scheduler (exactly one per deployment)",
        ["docbatch beat --schedule /var/lib/docbatch/beat"],
        client=False,
    )
    _loglevel(sp)
    sp.add_argument(
        "--schedule", help="beat's schedule state file (default: in the temp directory)"
    )
    sp.set_defaults(func=cmd_beat)

    sp = command(
        sub,
        "migrate",
        "create or upgrade the database tables",
        ["docbatch migrate", "docbatch migrate --wait 120"],
        client=False,
    )
    sp.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for the database (default 60)"
    )
    sp.set_defaults(func=cmd_migrate)
