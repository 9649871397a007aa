"""``docbatch``: client commands, process launchers and the embedded runner.

docbatch run docs.jsonl --task tags --task summarize -o out.jsonl   # no servers
docbatch run ./inbox --task summarize      # a folder of PDFs, Word files, e-mails, ...
docbatch api | docbatch worker --task embed | docbatch beat | docbatch maintenance
docbatch migrate
docbatch submit docs.jsonl --task tags --wait
docbatch status JOB ; docbatch results JOB -o out.jsonl ; docbatch cancel JOB
docbatch keys create --tenant acme ; docbatch keys revoke KEY_OR_ID ; docbatch keys list
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _task_specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = []
    for raw in args.task or []:
        spec = json.loads(raw) if raw.lstrip().startswith("{") else {"type": raw}
        if spec["type"] in ("tags", "classify") and args.labels:
            spec["labels"] = [x.strip() for x in args.labels.split(",") if x.strip()]
        if spec["type"] == "ask" and args.question:
            spec.setdefault("questions", list(args.question))
        if spec["type"] == "translate" and args.target_lang:
            spec.setdefault("target_lang", args.target_lang)
        specs.append(spec)
    if not specs:
        raise SystemExit(
            "docbatch: give at least one --task (summarize, tags, translate, embed, classify, "
            "entities, ask, generate)"
        )
    return specs


def cmd_run(args: argparse.Namespace) -> int:
    from docbatch.local import run

    report = run(
        [Path(p) for p in args.files],
        _task_specs(args),
        Path(args.output),
        workdir=Path(args.workdir) if args.workdir else None,
        progress=not args.quiet,
    )
    job = report.job
    docs = job["documents"]
    print(
        f"{job['status']}: {docs} documents, tasks {', '.join(job['counts'])}, "
        f"{report.seconds:.1f}s wall ({docs / report.seconds:.1f} docs/s); "
        f"results in {report.output}",
        file=sys.stderr,
    )
    from docbatch.progress import counts_table

    print(counts_table(job["counts"], report.seconds), file=sys.stderr)
    return 0 if job["status"] == "completed" else 1


def _client() -> Any:
    from docbatch.client import Client
    from docbatch.schema.settings import get_settings

    s = get_settings()
    return Client(s.api_url, s.api_key)


def _wait(client: Any, job_id: str) -> dict[str, Any]:
    from docbatch.progress import ProgressBar
    from docbatch.schema.statuses import TERMINAL_JOB_STATUSES

    bar = ProgressBar()
    while True:
        job = client.job(job_id)
        bar.update(job)
        if job["status"] in TERMINAL_JOB_STATUSES:
            bar.close()
            return job
        time.sleep(1.0)


def cmd_submit(args: argparse.Namespace) -> int:
    from docbatch.inputs import expand

    client = _client()
    tasks = _task_specs(args)
    files = expand(Path(p) for p in args.files)
    options = {"name": args.name, "idempotency_key": args.idempotency_key}
    if len(files) == 1 and files[0].jsonl:
        job = client.submit_ndjson(files[0].path, tasks, **options)
    else:  # one multipart upload; the api reads NDJSON, text and other files alike
        job = client.submit_files([(f.name, f.path) for f in files], tasks, **options)
    print(job["id"])
    if args.wait:
        from docbatch.progress import counts_table

        started = time.monotonic()
        job = _wait(client, job["id"])
        seconds = job.get("elapsed_seconds") or (time.monotonic() - started)
        print(f"{job['status']}: {job['documents']} documents in {seconds:.1f}s", file=sys.stderr)
        print(counts_table(job["counts"], seconds), file=sys.stderr)
        return 0 if job["status"] == "completed" else 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    client = _client()
    job = _wait(client, args.job) if args.wait else client.job(args.job)
    print(json.dumps(job, indent=2))
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    client = _client()
    chunks = client.results(args.job, errors_only=args.errors)
    if args.output == "-":
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        return 0
    write_atomically(Path(args.output), chunks)
    return 0


def write_atomically(target: Path, chunks: Iterator[bytes]) -> None:
    """Write to a temporary file beside ``target`` and rename it over ``target`` only when
    every chunk arrived: a failed download leaves an existing file as it was."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        # mkstemp makes the file private; give it the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def cmd_cancel(args: argparse.Namespace) -> int:
    print(json.dumps(_client().cancel(args.job), indent=2))
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    from docbatch import schedules_cli

    client = _client()
    if args.schedules_handler == "add":
        return schedules_cli.cmd_add(args, client, _task_specs(args))
    return schedules_cli.HANDLERS[args.schedules_handler](args, client)


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
    # Through the environment: the pool's processes read it as Settings.worker_task.
    os.environ["DOCBATCH_WORKER_TASK"] = args.task
    from docbatch.schema.settings import TASKS, get_settings
    from docbatch.schema.tables import EXTRACT

    get_settings.cache_clear()

    if args.task not in (*TASKS, EXTRACT):
        raise SystemExit(f"docbatch: --task must be one of {', '.join((*TASKS, EXTRACT))}")
    from docbatch.worker.app import app

    s = get_settings()
    queues = [s.queue_for(args.task)] + ([] if args.no_maintenance else [s.maintenance_queue])
    # A model worker is one process per GPU; the extract stage (CPU, no model) takes one
    # process per core unless told otherwise.
    concurrency = args.concurrency or (
        len(os.sched_getaffinity(0)) if args.task == EXTRACT and args.pool == "prefork" else 1
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
        f"{args.task}-{os.getpid()}@%h",
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


def cmd_keys(args: argparse.Namespace) -> int:
    from docbatch.keys import run_keys

    return run_keys(args)


def build_parser() -> argparse.ArgumentParser:
    from docbatch import __version__

    p = argparse.ArgumentParser(
        prog="docbatch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"docbatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def task_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--task",
            action="append",
            help="summarize|tags|translate|embed|classify|entities|ask|generate, or a "
            'JSON task such as \'{"type":"tags","labels":["a","b"]}\'',
        )
        sp.add_argument("--labels", help="comma-separated labels for --task tags or classify")
        sp.add_argument(
            "--question", action="append", help="a question for --task ask (repeat for more)"
        )
        sp.add_argument("--target-lang", help="target language for --task translate")

    sp = sub.add_parser("run", help="process files in one process group, no servers needed")
    sp.add_argument("files", nargs="+")
    task_options(sp)
    sp.add_argument("-o", "--output", default="docbatch-results.jsonl")
    sp.add_argument("--workdir", help="folder for the embedded database and broker")
    sp.add_argument("--quiet", action="store_true")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("submit", help="submit files to a running api")
    sp.add_argument("files", nargs="+")
    task_options(sp)
    sp.add_argument("--name")
    sp.add_argument("--idempotency-key")
    sp.add_argument("--wait", action="store_true", help="show progress until the job ends")
    sp.set_defaults(func=cmd_submit)

    sp = sub.add_parser("status", help="show a job")
    sp.add_argument("job")
    sp.add_argument("--wait", action="store_true")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("results", help="download a job's results as NDJSON")
    sp.add_argument("job")
    sp.add_argument("-o", "--output", default="-")
    sp.add_argument("--errors", action="store_true", help="only the failed documents")
    sp.set_defaults(func=cmd_results)

    sp = sub.add_parser("cancel", help="cancel a job")
    sp.add_argument("job")
    sp.set_defaults(func=cmd_cancel)

    from docbatch import schedules_cli

    schedules_cli.add_parser(sub, task_options, cmd_schedules)

    sp = sub.add_parser("api", help="run the HTTP api (uvicorn)")
    sp.add_argument("--host")
    sp.add_argument("--port", type=int)
    sp.add_argument("--workers", type=int, default=1)
    sp.add_argument("--migrate", action="store_true", help="wait for the db and migrate first")
    sp.set_defaults(func=cmd_api)

    sp = sub.add_parser(
        "worker", help="run a worker pinned to one task's model (or the extract stage)"
    )
    sp.add_argument("--task", required=True, help="a task, or extract (files to text)")
    sp.add_argument("--pool", default="prefork", choices=["prefork", "solo"])
    sp.add_argument(
        "--concurrency",
        type=int,
        help="processes; default 1 (one model per GPU), for --task extract one per core",
    )
    sp.add_argument("--loglevel", default="INFO")
    sp.add_argument(
        "--no-maintenance",
        action="store_true",
        help="do not consume the maintenance queue (reconciler)",
    )
    sp.set_defaults(func=cmd_worker)

    sp = sub.add_parser(
        "webhooks",
        help="send webhook deliveries (runs no model; one or more per deployment)",
    )
    sp.add_argument("--concurrency", type=int, help="default: DOCBATCH_WEBHOOK_CONCURRENCY")
    sp.add_argument("--loglevel", default="INFO")
    sp.set_defaults(func=cmd_webhooks)

    sp = sub.add_parser(
        "maintenance",
        help="consume the maintenance queue: schedule ticks, the reconciler, cancel sweeps "
        "(runs no model; keep one running, model workers may scale to zero)",
    )
    sp.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="threads (a slow schedule tick does not hold up a reconcile pass)",
    )
    sp.add_argument("--loglevel", default="INFO")
    sp.set_defaults(func=cmd_maintenance)

    sp = sub.add_parser("beat", help="run the scheduler (exactly one per deployment)")
    sp.add_argument("--loglevel", default="INFO")
    sp.add_argument("--schedule", help="beat's schedule state file")
    sp.set_defaults(func=cmd_beat)

    sp = sub.add_parser(
        "keys",
        help="create, revoke and list API keys (through the api with DOCBATCH_ADMIN_KEY, "
        "else the database)",
    )
    sp.add_argument(
        "--database", action="store_true", help="go to the database even with an admin key"
    )
    keys = sp.add_subparsers(dest="keys_command", required=True)
    kp = keys.add_parser("create", help="create a key for a tenant; prints it once")
    kp.add_argument("--tenant", required=True)
    kp = keys.add_parser("revoke", help="revoke a key (the key itself or its id)")
    kp.add_argument("key")
    kp = keys.add_parser("list", help="list keys (ids only)")
    kp.add_argument("--tenant")
    kp = keys.add_parser("webhook-secret", help="print the secret that signs a tenant's webhooks")
    kp.add_argument("--tenant", required=True)
    sp.set_defaults(func=cmd_keys)

    sp = sub.add_parser("migrate", help="create or upgrade the database tables")
    sp.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the database")
    sp.set_defaults(func=cmd_migrate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from docbatch.client import ApiError
    from docbatch.schema.errors import InputError

    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        # The reader went away (`docbatch results JOB | head`). As the Python docs advise
        # (signal module, "Note on SIGPIPE"): point stdout at devnull so the interpreter's
        # final flush does not raise again, and exit non-zero quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except InputError as exc:
        print(f"docbatch: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"docbatch: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file to read or write: missing, unreadable, disk full
        where = f": {exc.filename}" if exc.filename else ""
        print(f"docbatch: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
