"""``docbatch schedules add|list|show|remove``: recurring jobs through the api.

docbatch schedules add nightly --cron "0 2 * * *" --folder /data/inbox --task summarize
docbatch schedules list
docbatch schedules show nightly        # with its recent runs
docbatch schedules remove nightly
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cmd_add(args: argparse.Namespace, client: Any, tasks: list[dict[str, Any]]) -> int:
    body = {
        "name": args.name,
        "cron": args.cron,
        "source": {
            "type": "folder",
            "path": str(Path(args.folder).resolve()),
            "pattern": args.pattern,
        },
        "tasks": tasks,
        "reuse_results": not args.no_reuse,
    }
    schedule = client.create_schedule(body)
    print(schedule["id"])
    print(f"next run {schedule['next_run_at']}", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace, client: Any) -> int:
    found = client.schedules()["data"]
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for s in found:
        last = s["runs"][0] if s["runs"] else None
        last_text = (
            f"last {last['period_start']} {last['job_id'] or 'error: ' + str(last['error'])}"
            if last
            else "never ran"
        )
        tasks = ",".join(t["type"] for t in s["tasks"])
        print(
            f"{s['id']}  {s['name']}  [{s['cron']}]  {s['source']['path']}  {tasks}  "
            f"next {s['next_run_at']}  {last_text}"
        )
    return 0


def cmd_show(args: argparse.Namespace, client: Any) -> int:
    print(json.dumps(client.schedule(args.schedule), indent=2))
    return 0


def cmd_remove(args: argparse.Namespace, client: Any) -> int:
    client.delete_schedule(args.schedule)
    print(f"removed {args.schedule}", file=sys.stderr)
    return 0


def add_parser(
    sub: Any,
    task_options: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
) -> None:
    """Register ``schedules`` on the main parser; ``run`` dispatches with a client."""
    sp = sub.add_parser("schedules", help="recurring jobs over a folder (cron, UTC)")
    ssub = sp.add_subparsers(dest="schedules_command", required=True)
    add = ssub.add_parser("add", help="create a schedule")
    add.add_argument("name")
    add.add_argument("--cron", required=True, help="'0 2 * * *'; a 6th field is seconds (UTC)")
    add.add_argument("--folder", required=True, help="folder of .txt, .md and .jsonl files")
    add.add_argument("--pattern", default="**/*", help="glob under the folder (default **/*)")
    add.add_argument(
        "--no-reuse", action="store_true", help="recompute unchanged documents every run"
    )
    task_options(add)
    add.set_defaults(func=run, schedules_handler="add")
    lst = ssub.add_parser("list", help="list schedules")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=run, schedules_handler="list")
    show = ssub.add_parser("show", help="a schedule and its recent runs (JSON)")
    show.add_argument("schedule", help="id or name")
    show.set_defaults(func=run, schedules_handler="show")
    rm = ssub.add_parser("remove", help="delete a schedule (its jobs stay)")
    rm.add_argument("schedule", help="id or name")
    rm.set_defaults(func=run, schedules_handler="remove")


HANDLERS: dict[str, Callable[..., int]] = {
    "list": cmd_list,
    "show": cmd_show,
    "remove": cmd_remove,
}
