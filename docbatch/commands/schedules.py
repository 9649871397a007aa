"""``docbatch schedules add|list|show|remove``: recurring jobs through the api.

docbatch schedules add nightly --cron "0 2 * * *" --folder /data/inbox --task summarize
docbatch schedules list
docbatch schedules show nightly        # with its recent runs
docbatch schedules pause nightly ; docbatch schedules resume nightly
docbatch schedules run nightly         # fire now ; docbatch schedules latest nightly
docbatch schedules remove nightly
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from docbatch import exitcodes
from docbatch.commands.common import add_task_options, client, command, task_specs
from docbatch.output import add_format, emit

COLUMNS = ["id", "name", "cron", "folder", "tasks", "next_run_at", "last_run"]


def _row(s: Any) -> dict[str, Any]:
    data = s.model_dump(mode="json")
    last = data["runs"][0] if data["runs"] else None
    if last is None:
        last_text = "never ran"
    elif last["job_id"]:
        last_text = f"{last['period_start']} {last['job_id']} {last['job_status'] or ''}".strip()
    else:
        last_text = f"{last['period_start']} error: {last['error']}"
    return {
        **data,
        "folder": data["source"].get("path", ""),
        "tasks": ",".join(t["type"] for t in data["tasks"]),
        "last_run": last_text,
    }


def cmd_add(args: argparse.Namespace) -> int:
    body = {
        "name": args.name,
        "cron": args.cron,
        "source": {
            "type": "folder",
            "path": str(Path(args.folder).resolve()),
            "pattern": args.pattern,
        },
        "tasks": task_specs(args),
        "reuse_results": not args.no_reuse,
        "only_changed": args.only_changed,
        "timezone": args.timezone,
    }
    if args.priority is not None:
        body["priority"] = args.priority
    if args.webhook_url:
        body["webhook_url"] = args.webhook_url
    schedule = client(args).create_schedule(body)
    if args.format == "table":
        print(schedule.id)
        print(f"next run {schedule.next_run_at.isoformat()}", file=sys.stderr)
    else:
        emit(schedule.model_dump(mode="json"), args.format)
    return exitcodes.OK


def cmd_list(args: argparse.Namespace) -> int:
    found = client(args).schedules()
    if args.format == "table":
        emit([_row(s) for s in found], "table", columns=COLUMNS)
    else:
        emit([s.model_dump(mode="json") for s in found], args.format)
    return exitcodes.OK


def cmd_show(args: argparse.Namespace) -> int:
    schedule = client(args).schedule(args.schedule)
    if args.format == "table":
        row = _row(schedule)
        for key in ("id", "name", "cron", "folder", "tasks", "enabled", "next_run_at"):
            print(f"{key + ':':<12} {row[key]}")
        emit(
            [r.model_dump(mode="json") for r in schedule.runs],
            "table",
            columns=["period_start", "fired_at", "job_id", "job_status", "error"],
        )
    else:
        emit(schedule.model_dump(mode="json"), args.format)
    return exitcodes.OK


def _print_run(run: Any, fmt: str) -> None:
    data = run.model_dump(mode="json")
    if fmt == "table":
        emit([data], "table", columns=["fired_at", "period_start", "job_id", "job_status", "error"])
    else:
        emit(data, fmt)


def cmd_pause(args: argparse.Namespace) -> int:
    c = client(args)
    s = c.pause_schedule(args.schedule) if args.command_name == "pause" else None
    if s is None:
        s = c.resume_schedule(args.schedule)
    state = "active" if s.enabled else "paused"
    print(f"{s.id} {s.name} {state}", file=sys.stderr)
    return exitcodes.OK


def cmd_run(args: argparse.Namespace) -> int:
    run = client(args).run_schedule(args.schedule)
    if args.format == "table" and run.job_id:
        print(run.job_id)  # JOB=$(docbatch schedules run nightly)
        return exitcodes.OK
    _print_run(run, args.format)
    return exitcodes.OK if run.job_id else exitcodes.ERROR


def cmd_latest(args: argparse.Namespace) -> int:
    run = client(args).latest_run(args.schedule)
    _print_run(run, args.format)
    if args.exit_status and run.job_status:
        return exitcodes.for_status(run.job_status)
    return exitcodes.OK


def cmd_remove(args: argparse.Namespace) -> int:
    client(args).delete_schedule(args.schedule)
    print(f"removed {args.schedule}", file=sys.stderr)
    return exitcodes.OK


def _ref(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("schedule", metavar="SCHEDULE", help="the schedule's id (sch_...) or name")


def register(sub: Any) -> None:
    sp = command(
        sub,
        "schedules",
        "recurring jobs over a folder (cron, in a time zone)",
        [
            'docbatch schedules add nightly --cron "0 2 * * *" --folder /data/inbox '
            "--task summarize",
            "docbatch schedules list",
        ],
    )
    ssub = sp.add_subparsers(dest="schedules_command", required=True, metavar="COMMAND")
    add = command(
        ssub,
        "add",
        "create a schedule; prints its id",
        [
            'docbatch schedules add nightly --cron "0 2 * * *" --folder /data/inbox/acme '
            "--task summarize --task tags",
        ],
    )
    add.add_argument("name", help="a name unique to the tenant, e.g. nightly")
    add.add_argument(
        "--cron",
        required=True,
        help="'0 2 * * *' (minute hour day month weekday); a 6th field is seconds",
    )
    add.add_argument(
        "--folder",
        required=True,
        help="folder to read every run (below one of DOCBATCH_SCHEDULE_FOLDER_ROOTS/<tenant>)",
    )
    add.add_argument("--pattern", default="**/*", help="glob under the folder (default **/*)")
    add.add_argument(
        "--no-reuse", action="store_true", help="recompute unchanged documents every run"
    )
    add.add_argument(
        "--only-changed",
        action="store_true",
        help="each run takes only files new or changed (size or mtime) since they last went in",
    )
    add.add_argument(
        "--timezone",
        default="UTC",
        help="the zone --cron is read in, e.g. Europe/Berlin (default UTC; DST followed)",
    )
    add.add_argument("--priority", type=int, help="priority of every job it makes, 0-9")
    add.add_argument(
        "--webhook-url", metavar="URL", help="POSTed each job it makes when the job ends"
    )
    add_task_options(add)
    add_format(add)
    add.set_defaults(func=cmd_add)
    lst = command(ssub, "list", "list schedules with their last run", ["docbatch schedules list"])
    add_format(lst)
    lst.set_defaults(func=cmd_list)
    show = command(
        ssub, "show", "a schedule and its recent runs", ["docbatch schedules show nightly"]
    )
    _ref(show)
    add_format(show)
    show.set_defaults(func=cmd_show)
    for name, what in (
        ("pause", "stop firing until resumed (jobs and runs stay)"),
        ("resume", "fire again from the next period (missed periods are not made up)"),
    ):
        sp_ = command(ssub, name, what, [f"docbatch schedules {name} nightly"])
        _ref(sp_)
        sp_.set_defaults(func=cmd_pause, command_name=name)
    run = command(
        ssub,
        "run",
        "fire now, outside the cron; prints the job id",
        [
            "docbatch schedules run nightly",
            "docbatch status $(docbatch schedules run nightly) --wait",
        ],
    )
    _ref(run)
    add_format(run)
    run.set_defaults(func=cmd_run)
    latest = command(
        ssub,
        "latest",
        "the most recent run: its job and the job's status, or its error",
        ["docbatch schedules latest nightly", "docbatch schedules latest nightly --exit-status"],
    )
    _ref(latest)
    latest.add_argument(
        "--exit-status",
        action="store_true",
        help="exit with the run's job's code (0 completed, 3 with errors, 4 failed)",
    )
    add_format(latest)
    latest.set_defaults(func=cmd_latest)
    rm = command(
        ssub, "remove", "delete a schedule (its jobs stay)", ["docbatch schedules remove nightly"]
    )
    _ref(rm)
    rm.set_defaults(func=cmd_remove)
