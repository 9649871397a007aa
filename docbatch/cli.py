"""``docbatch``: client commands, process launchers and the embedded runner.

docbatch run docs.jsonl --task tags --task summarize -o out.jsonl   # no servers
docbatch run ./inbox --task summarize -o out.parquet   # PDFs, Word files, e-mails, ...
docbatch submit docs.jsonl --task tags --wait          # to a running api
docbatch jobs list ; docbatch jobs show JOB ; docbatch jobs errors JOB
docbatch results JOB --format parquet -o out.parquet ; docbatch cancel JOB
docbatch api | docbatch worker --task embed | docbatch worker --deployment e5
docbatch beat | docbatch maintenance
docbatch migrate
docbatch config show ; docbatch keys create --tenant acme
docbatch models plan ; HF_HOME=/models/hf docbatch models fill
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from docbatch import exitcodes

# The command groups, in --help order: one module each under docbatch/commands/, each
# with ``register(sub)``. A new group is a new module and one name here.
COMMANDS = [
    "run",
    "jobs",
    "batches",
    "schedules",
    "servers",
    "maintenance",
    "keys",
    "models",
    "config",
    "data",
    "usage",
]


def build_parser() -> argparse.ArgumentParser:
    from docbatch import __version__

    p = argparse.ArgumentParser(
        prog="docbatch",
        description=__doc__,
        epilog=exitcodes.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"docbatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"docbatch.commands.{name}").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from docbatch.client import ApiError, ApiUnreachable
    from docbatch.schema.errors import DocbatchError, InputError

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
        return exitcodes.ERROR
    except ApiUnreachable as exc:
        print(f"docbatch: {exc}", file=sys.stderr)
        return exitcodes.UNREACHABLE
    except ApiError as exc:
        print(f"docbatch: {exc}", file=sys.stderr)
        return exitcodes.ERROR
    except InputError as exc:
        print(f"docbatch: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    except DocbatchError as exc:  # SettingsError, UsageError: the message names the fix
        for line in str(exc).splitlines():  # a SettingsError has one line per problem
            print(f"docbatch: {line}", file=sys.stderr)
        return exitcodes.USAGE
    except OSError as exc:  # a file to read or write: missing, unreadable, disk full
        where = f": {exc.filename}" if exc.filename else ""
        print(f"docbatch: {exc.strerror or exc}{where}", file=sys.stderr)
        return exitcodes.ERROR


if __name__ == "__main__":
    sys.exit(main())
