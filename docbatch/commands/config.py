"""``docbatch config show|check``: the settings in force and where each came from.

docbatch config show                      # every setting: variable, value, source
docbatch config show --changed            # only what is not a default
docbatch config check                     # exit 0, or 2 naming each bad variable
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from docbatch import exitcodes
from docbatch.commands.common import command
from docbatch.output import add_format, emit


def cmd_show(args: argparse.Namespace) -> int:
    from docbatch.schema.config import describe, gather, load_settings

    rows = describe(load_settings(), gather())
    if args.changed:
        rows = [r for r in rows if r["source"] != "default"]
    if args.name:
        wanted = args.name.upper()
        rows = [r for r in rows if wanted in r["variable"]]
    if not rows and args.format == "table":
        print("every setting is at its default", file=sys.stderr)
        return exitcodes.OK
    emit(rows, args.format, columns=["variable", "value", "source"])
    return exitcodes.OK


def cmd_check(args: argparse.Namespace) -> int:
    from docbatch.schema.config import SettingsError, describe, gather, load_settings

    try:
        sources = gather()
        settings = load_settings()
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"docbatch: {problem}", file=sys.stderr)
        return exitcodes.USAGE
    changed = [r for r in describe(settings, sources) if r["source"] != "default"]
    where = sorted({r["source"].split(" (")[0] for r in changed})
    print(
        f"configuration ok: {len(changed)} settings set"
        + (f" (from {', '.join(where)})" if where else " (all defaults)"),
        file=sys.stderr,
    )
    return exitcodes.OK


def register(sub: Any) -> None:
    sp = command(
        sub,
        "config",
        "show and check the settings (environment, .env, DOCBATCH_CONFIG file)",
        ["docbatch config show --changed", "docbatch config check"],
        client=False,
    )
    csub = sp.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    show = command(
        csub,
        "show",
        "every setting's effective value and its source, by variable, secrets masked",
        [
            "docbatch config show",
            "docbatch config show --changed --format json",
            "docbatch config show models__embed",
        ],
        client=False,
    )
    show.add_argument(
        "name", nargs="?", help="only variables containing this, e.g. webhook or MODELS__EMBED"
    )
    show.add_argument("--changed", action="store_true", help="only settings not at their default")
    add_format(show)
    show.set_defaults(func=cmd_show)
    check = command(
        csub,
        "check",
        "check every DOCBATCH_* variable, .env line and config file key; exit 2 naming "
        "unknown names (with the closest valid one) and bad values",
        ["docbatch config check", "DOCBATCH_CONFIG=prod.toml docbatch config check"],
        client=False,
    )
    check.set_defaults(func=cmd_check)
