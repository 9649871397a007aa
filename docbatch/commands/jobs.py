"""Jobs on a running api: ``submit``, ``status``, ``results``, ``cancel``, ``delete`` and
``jobs list|show|errors``.

docbatch submit docs.jsonl --task tags --wait
docbatch status JOB --wait ; docbatch results JOB --format parquet -o out.parquet
docbatch jobs list --status running ; docbatch jobs errors JOB --format jsonl
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from docbatch import exitcodes
from docbatch.commands.common import UsageError, add_task_options, client, command, task_specs
from docbatch.output import add_format, emit

JOB_COLUMNS = ["id", "name", "status", "documents", "tasks", "created_at", "elapsed_seconds"]


def _row(job: Any) -> dict[str, Any]:
    data = job.model_dump(mode="json")
    return {**data, "tasks": ",".join(data["tasks"])}


def _wait(job: Any, quiet: bool = False) -> Any:
    from docbatch.progress import ProgressBar

    bar = None if quiet else ProgressBar()
    final = job.wait(on_update=(lambda j: bar.update(j.model_dump(mode="json"))) if bar else None)
    if bar:
        bar.close()
    return final


def _summary(job: Any, seconds: float) -> None:
    from docbatch.progress import counts_table

    data = job.model_dump(mode="json")
    print(f"{data['status']}: {data['documents']} documents in {seconds:.1f}s", file=sys.stderr)
    print(counts_table(data["counts"], seconds), file=sys.stderr)


def _warn(job: Any) -> None:
    """The api's warnings about the job (a deployment no worker serves), on stderr."""
    for warning in getattr(job, "warnings", None) or []:
        print(f"warning: {warning}", file=sys.stderr)


def _print_job(job: Any, fmt: str) -> None:
    if fmt == "table":
        from docbatch.progress import counts_table

        data = job.model_dump(mode="json")
        for key in ("id", "name", "status", "documents", "created_at", "finished_at"):
            print(f"{key + ':':<12} {data[key] if data[key] is not None else ''}")
        print(counts_table(data["counts"]))
        _warn(job)
    else:
        emit(job.model_dump(mode="json"), fmt)


def cmd_submit(args: argparse.Namespace) -> int:
    c = client(args)
    started = time.monotonic()
    job = c.submit(
        paths=args.files,
        tasks=task_specs(args),
        name=args.name,
        priority=args.priority,
        webhook_url=args.webhook_url,
        reuse_results=args.reuse_results,
        idempotency_key=args.idempotency_key,
    )
    if args.format == "table":
        print(job.id)  # JOB=$(docbatch submit ...)
        sys.stdout.flush()
    _warn(job.data)  # before --wait waits on a deployment nobody serves
    if not args.wait:
        if args.format != "table":
            emit(job.data.model_dump(mode="json"), args.format)
        return exitcodes.OK
    final = _wait(job, args.quiet)
    if args.format != "table":
        emit(final.model_dump(mode="json"), args.format)
    _summary(final, final.elapsed_seconds or (time.monotonic() - started))
    return exitcodes.for_job(final)


def cmd_status(args: argparse.Namespace) -> int:
    job = client(args).job(args.job)
    final = _wait(job, args.quiet) if args.wait else job.data
    _print_job(final, args.format)
    return exitcodes.for_job(final) if args.wait else exitcodes.OK


def cmd_results(args: argparse.Namespace) -> int:
    from docbatch.client import write_atomically

    fmt = args.format
    if fmt is None:
        fmt = "parquet" if args.output.endswith(".parquet") else "ndjson"
    if fmt == "parquet" and args.errors:
        raise UsageError("--errors gives NDJSON only; leave out --format parquet")
    if fmt == "parquet" and args.output == "-" and sys.stdout.isatty():
        raise UsageError("Parquet is binary: give -o FILE.parquet")
    chunks = client(args).results(args.job, errors_only=args.errors, format=fmt)
    if args.output == "-":
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        return exitcodes.OK
    write_atomically(Path(args.output), chunks)
    return exitcodes.OK


def cmd_cancel(args: argparse.Namespace) -> int:
    job = client(args).cancel(args.job)
    if args.format == "table":
        print(f"{job.id} {job.status}")
    else:
        emit(job.model_dump(mode="json"), args.format)
    return exitcodes.OK


def cmd_delete(args: argparse.Namespace) -> int:
    job = client(args).delete(args.job)
    if args.format == "table":
        print(f"{job.id} {job.status}")
    else:
        emit(job.model_dump(mode="json"), args.format)
    return exitcodes.OK


def cmd_list(args: argparse.Namespace) -> int:
    rows = [_row(j.data) for j in client(args).jobs(status=args.status, limit=args.limit)]
    emit(rows, args.format, columns=JOB_COLUMNS)
    return exitcodes.OK


def cmd_show(args: argparse.Namespace) -> int:
    _print_job(client(args).job(args.job).data, args.format)
    return exitcodes.OK


def cmd_errors(args: argparse.Namespace) -> int:
    job = client(args).job(args.job)
    rows = []
    for line in job.iter_results(errors_only=True):
        for task, result in line.results.items():
            if result.status == "failed":
                rows.append({"custom_id": line.custom_id, "task": task, "error": result.error})
        if args.limit and len(rows) >= args.limit:
            break
    emit(rows, args.format, columns=["custom_id", "task", "error"])
    return exitcodes.OK


def _job_arg(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("job", metavar="JOB", help="a job id (job_...), as `docbatch submit` prints")


def _wait_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--wait",
        action="store_true",
        help="show progress until the job ends, then exit with its code (0, 3 or 4)",
    )
    sp.add_argument("--quiet", action="store_true", help="with --wait: no progress bar")


def register(sub: Any) -> None:
    sp = command(
        sub,
        "submit",
        "submit files to a running api",
        [
            "docbatch submit examples/stdlib-docs.jsonl --task summarize --wait",
            "JOB=$(docbatch submit ./inbox --task tags --labels invoice,contract)",
            "docbatch submit docs.jsonl --task embed --name nightly --idempotency-key 2026-12-06",
        ],
    )
    sp.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="NDJSON files of documents, other files (PDF, DOCX, e-mail, zip, ...), or folders",
    )
    add_task_options(sp)
    sp.add_argument("--name", help="a name for the job, shown in lists and the dashboard")
    sp.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="submitting again with the same key returns the first job instead of a new one",
    )
    sp.add_argument("--priority", type=int, help="0-9, higher runs first (default 0)")
    sp.add_argument(
        "--webhook-url", metavar="URL", help="POSTed the job when it ends (signed; see docs)"
    )
    sp.add_argument(
        "--reuse-results",
        action="store_true",
        help="copy results of documents already processed with the same model and params",
    )
    _wait_options(sp)
    add_format(sp)
    sp.set_defaults(func=cmd_submit)

    sp = command(
        sub,
        "status",
        "show a job; with --wait, follow it and exit with its code",
        ["docbatch status job_123", "docbatch status job_123 --wait && load-results.sh"],
    )
    _job_arg(sp)
    _wait_options(sp)
    add_format(sp)
    sp.set_defaults(func=cmd_status)

    sp = command(
        sub,
        "results",
        "download a job's results (NDJSON or Parquet)",
        [
            "docbatch results job_123 -o out.jsonl",
            "docbatch results job_123 --format parquet -o out.parquet",
            "docbatch results job_123 | jq -c .results.summarize.output",
        ],
    )
    _job_arg(sp)
    sp.add_argument(
        "-o",
        "--output",
        default="-",
        metavar="PATH",
        help="file to write (replaced only when the download completes); default: stdout",
    )
    sp.add_argument(
        "--format",
        choices=["ndjson", "parquet"],
        help="ndjson (one line per document) or parquet; default: from -o's suffix, else ndjson",
    )
    sp.add_argument("--errors", action="store_true", help="only the failed documents (NDJSON)")
    sp.set_defaults(func=cmd_results)

    sp = command(sub, "cancel", "cancel a job", ["docbatch cancel job_123"])
    _job_arg(sp)
    add_format(sp)
    sp.set_defaults(func=cmd_cancel)

    sp = command(
        sub,
        "delete",
        "delete a job and everything stored for it (a running job is cancelled first)",
        ["docbatch delete job_123"],
    )
    _job_arg(sp)
    add_format(sp)
    sp.set_defaults(func=cmd_delete)

    sp = command(
        sub,
        "jobs",
        "list jobs, show one, list its failed documents",
        ["docbatch jobs list", "docbatch jobs show job_123", "docbatch jobs errors job_123"],
    )
    jsub = sp.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    lp = command(
        jsub,
        "list",
        "this tenant's jobs, newest first",
        ["docbatch jobs list --status running", "docbatch jobs list --limit 500 --format jsonl"],
    )
    lp.add_argument(
        "--status",
        help="only jobs in this status: queued, running, completed, completed_with_errors, "
        "failed, cancelling, cancelled",
    )
    lp.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    add_format(lp)
    lp.set_defaults(func=cmd_list)
    show = command(
        jsub, "show", "a job's status and per-task counts", ["docbatch jobs show job_123"]
    )
    _job_arg(show)
    add_format(show)
    show.set_defaults(func=cmd_show)
    errs = command(
        jsub,
        "errors",
        "a job's failed documents: custom_id, task, reason",
        ["docbatch jobs errors job_123", "docbatch jobs errors job_123 --format jsonl > bad.jsonl"],
    )
    _job_arg(errs)
    errs.add_argument("--limit", type=int, help="stop after this many failures")
    add_format(errs)
    errs.set_defaults(func=cmd_errors)
