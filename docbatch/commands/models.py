"""``docbatch models plan|fill|check``: the hub models the workers load, into the cache
they read offline (``docbatch/worker/weights.py``).

docbatch models plan                          # what the fleet's workers load, pinned
HF_HOME=/models/hf docbatch models fill --pair en-de --model org/name@1a2b3c4
HF_HOME=/models/hf HF_HUB_OFFLINE=1 docbatch models check
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from docbatch import exitcodes
from docbatch.commands.common import UsageError, command
from docbatch.output import add_format, emit


def _planned(args: argparse.Namespace) -> list[Any]:
    from docbatch.schema.settings import get_settings
    from docbatch.worker.weights import FillError, parse_model, parse_pair, plan, read_list

    try:
        extra = [parse_model(m) for m in args.model or []]
        for path in args.list or []:
            extra += read_list(path)
        pairs = [parse_pair(p) for p in args.pair or []]
    except FillError as exc:
        raise UsageError(str(exc)) from None
    return plan(get_settings(), pairs=pairs, extra=extra)


def _failed(exc: Exception) -> int:
    for line in str(exc).splitlines():
        print(f"docbatch: {line}", file=sys.stderr)
    return exitcodes.ERROR


def _row(model: Any, commit: str | None = None) -> dict[str, Any]:
    row = {
        "model": model.repo_id,
        "revision": model.revision,
        "pinned": "yes" if model.pinned else "NO (a branch: pin a commit)",
        "used_by": ", ".join(model.used_by),
    }
    return row if commit is None else {**row, "commit": commit}


def cmd_plan(args: argparse.Namespace) -> int:
    rows = [_row(m) for m in _planned(args)]
    emit(rows, args.format, columns=["model", "revision", "pinned", "used_by"])
    return exitcodes.OK


def cmd_fill(args: argparse.Namespace) -> int:
    from docbatch.worker.weights import FillError, fill

    try:
        for done in fill(_planned(args)):
            print(f"filled {done.model.repo_id}@{done.model.revision} -> {done.path}", flush=True)
    except FillError as exc:
        return _failed(exc)
    return exitcodes.OK


def cmd_check(args: argparse.Namespace) -> int:
    from docbatch.worker.weights import FillError, check

    try:
        found = check(_planned(args))
    except FillError as exc:
        return _failed(exc)
    emit(
        [_row(f.model, f.commit) for f in found],
        args.format,
        columns=["model", "revision", "commit", "used_by"],
    )
    print(f"all {len(found)} models are in the cache", file=sys.stderr)
    return exitcodes.OK


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pair",
        action="append",
        metavar="SRC-TGT",
        help="a translation pair the per-pair translate model serves, e.g. en-de (repeatable)",
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="ID@REVISION",
        help="one more hub model, e.g. facebook/bart-large-mnli@d7645e1 (repeatable)",
    )
    parser.add_argument(
        "--list",
        action="append",
        metavar="FILE",
        help="a file of more models, one '<hub id> <revision>' per line (repeatable)",
    )


def register(sub: Any) -> None:
    sp = command(
        sub,
        "models",
        "the hub models the workers load (each deployment's, pinned by revision): list "
        "them, fill the cache the workers read offline ($HF_HOME/hub), check it",
        ["docbatch models plan", "HF_HOME=/models/hf docbatch models fill --pair en-de"],
        client=False,
    )
    msub = sp.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    p = command(
        msub,
        "plan",
        "every hub model the configured deployments load, with its revision and users",
        ["docbatch models plan", "docbatch models plan --pair en-de --format json"],
        client=False,
    )
    _selection(p)
    add_format(p)
    p.set_defaults(func=cmd_plan)
    p = command(
        msub,
        "fill",
        "download the planned models into the hub cache ($HF_HOME/hub) and find each "
        "again offline, as a worker will; exit 1 naming any that failed",
        [
            "HF_HOME=/models/hf docbatch models fill",
            "docbatch models fill --pair en-de --pair de-en --list models.txt",
        ],
        client=False,
    )
    _selection(p)
    p.set_defaults(func=cmd_fill)
    p = command(
        msub,
        "check",
        "offline: is every planned model in the cache? exit 1 naming the missing ones",
        ["HF_HOME=/models/hf HF_HUB_OFFLINE=1 docbatch models check"],
        client=False,
    )
    _selection(p)
    add_format(p)
    p.set_defaults(func=cmd_check)
