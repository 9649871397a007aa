"""``docbatch schedules add|list|show|remove``: recurring jobs through the api.

docbatch schedules add nightly --cron "0 2 * * *" --folder /data/inbox --task summarize
docbatch schedules list
docbatch schedules show nightly        # with its recent runs
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
    }
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
        "recurring jobs over a folder (cron)",
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
    rm = command(
        ssub, "remove", "delete a schedule (its jobs stay)", ["docbatch schedules remove nightly"]
    )
    _ref(rm)
    rm.set_defaults(func=cmd_remove)
