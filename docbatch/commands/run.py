"""``docbatch run``: process files on this machine, no servers (embedded database and
broker, one worker process per task).

docbatch run docs.jsonl --task tags --task summarize -o out.jsonl
docbatch run ./inbox --task summarize -o out.parquet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from docbatch import exitcodes
from docbatch.commands.common import add_task_options, command, task_specs


def cmd_run(args: argparse.Namespace) -> int:
    from docbatch.local import run

    report = run(
        [Path(p) for p in args.files],
        task_specs(args),
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
    return exitcodes.for_job(job)


def register(sub: Any) -> None:
    sp = command(
        sub,
        "run",
        "process files on this machine, no servers needed",
        [
            "docbatch run examples/stdlib-docs.jsonl --task summarize --task tags",
            "docbatch run ./inbox --task summarize -o inbox.parquet",
            'docbatch run notes/ --task tags --labels "billing,bug,praise" -o tags.jsonl',
        ],
        client=False,
    )
    sp.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="NDJSON files of documents ({custom_id, text, metadata} per line), other files "
        "(PDF, DOCX, HTML, e-mail, text, zip/tar), or folders of them",
    )
    add_task_options(sp)
    sp.add_argument(
        "-o",
        "--output",
        default="docbatch-results.jsonl",
        metavar="PATH",
        help="where the results go: NDJSON, or Parquet when PATH ends in .parquet "
        "(default docbatch-results.jsonl)",
    )
    sp.add_argument(
        "--workdir",
        metavar="DIR",
        help="folder for the embedded database, broker and worker logs (default: a temp folder)",
    )
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(func=cmd_run)
