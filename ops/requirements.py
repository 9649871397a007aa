"""Print what ``docbatch[EXTRA,...]`` requires, one requirement a line, from pyproject.toml.

The images install their dependencies in a layer of their own, before the code (so that
layer survives code edits), pinned by requirements.lock::

    python ops/requirements.py server > /tmp/requirements.txt       # the slim image
    pip install -c requirements.lock -r /tmp/requirements.txt

The base dependencies come first; an extra that names ``docbatch[other]`` brings other's.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

SELF = re.compile(r"^docbatch\[([^\]]+)\]$")


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    found: list[str] = list(project["dependencies"])
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"docbatch has no extra {extra!r}: {', '.join(optional)}")
        seen.add(extra)
        for req in optional[extra]:
            nested = SELF.match(req.replace(" ", ""))
            if nested:
                todo += nested.group(1).split(",")
            elif req not in found:
                found.append(req)
    return found


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    names = [e for arg in sys.argv[1:] for e in arg.split(",") if e]
    print("\n".join(requirements(root / "pyproject.toml", names)))
