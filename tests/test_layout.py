"""The folder table in README.md holds: api → domain ← worker, all on schema."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"schema", "domain", "api", "worker", "docbatch"}
# What each package may import of docbatch's own packages (README "Architecture").
ALLOWED = {
    "schema": {"schema"},
    "domain": {"domain", "schema"},
    "api": {"api", "domain", "schema"},
    "worker": {"worker", "domain", "schema"},
    "docbatch": PACKAGES,
}


def _imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES)
    return found


def test_each_package_imports_only_what_the_readme_allows():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            extra = _imported_packages(path) - allowed
            if extra:
                wrong.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}")
    assert not wrong, "\n".join(wrong)
