"""How the CLI prints: ``--format table|json|jsonl`` for every command that prints.

``table`` is for people (aligned columns, the columns a command chooses), ``json`` one
document (an object, or a list of rows), ``jsonl`` one JSON object per line (``jq -c``,
a warehouse loader). Example::

    emit(rows, args.format, columns=["id", "status", "documents"])
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

FORMATS = ("table", "json", "jsonl")


def add_format(parser: argparse.ArgumentParser, default: str = "table") -> None:
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=default,
        help=f"output: table (for people), json, or jsonl (one object per line); default {default}",
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def emit(
    data: dict[str, Any] | Sequence[dict[str, Any]],
    fmt: str,
    columns: Sequence[str] | None = None,
) -> None:
    """Print one object or a list of rows in ``fmt``. A single object as a table is two
    columns (field, value); a list as a table shows ``columns`` (default: every key)."""
    out = sys.stdout
    if fmt == "json":
        out.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    rows = [data] if isinstance(data, dict) else list(data)
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, separators=(",", ":"), default=str) + "\n")
        return
    if isinstance(data, dict) and columns is None:
        pairs = [{"field": k, "value": v} for k, v in data.items()]
        out.write(table(pairs, ["field", "value"]) + "\n")
        return
    cols = list(columns or (rows[0].keys() if rows else []))
    out.write(table(rows, cols) + "\n")
