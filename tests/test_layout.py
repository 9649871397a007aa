"""The folder table in docs/concepts/architecture.md holds: api → domain ← worker, all on
schema."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"schema", "domain", "api", "worker"}
PACKAGES = LAYERS | {"docbatch"}
# What each package may import of docbatch's own packages (docs/concepts/architecture.md).
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
        found.update(layer for n in names if (layer := _layer(n)) is not None)
    return found


def _layer(module: str) -> str | None:
    """The folder a docbatch module lives in: ``docbatch.domain.jobs`` -> ``domain``, the CLI's
    ``docbatch.cli`` -> ``docbatch``; a bare ``domain.jobs`` (no import root) -> ``domain`` too,
    so that test_nothing_imports_a_layer_without_the_docbatch_root can name it."""
    parts = module.split(".")
    if parts[0] == "docbatch":
        return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "docbatch"
    return parts[0] if parts[0] in LAYERS else None


def _sources(package: str) -> list[Path]:
    # docbatch/{api,domain,schema,worker} are symlinks to the layers: count each file once.
    return [
        p
        for p in sorted((ROOT / package).rglob("*.py"))
        if not any(part.is_symlink() for part in [p, *p.parents])
    ]


def test_each_package_imports_only_what_the_readme_allows():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in _sources(package):
            extra = _imported_packages(path) - allowed
            if extra:
                wrong.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}")
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_a_layer_without_the_docbatch_root():
    """The wheel installs one top-level name, ``docbatch``: a bare ``import schema`` would
    find PyPI's schema package (or nothing) on a user's machine."""
    bare = []
    for folder in ["api", "domain", "schema", "worker", "docbatch", "tests", "bench"]:
        for path in _sources(folder):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                bare += [
                    f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in LAYERS
                ]
    assert not bare, "\n".join(bare)


def _domain_modules() -> dict[str, Path]:
    """Every domain module by its dotted name under docbatch.domain (``jobs``,
    ``openai.batches``; a package by its own name, ``openai``)."""
    found = {}
    for path in sorted((ROOT / "domain").rglob("*.py")):
        parts = path.relative_to(ROOT / "domain").with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join(parts)] = path
    return found


def _domain_imports(path: Path, modules: set[str]) -> set[str]:
    """The docbatch.domain modules ``path`` imports, at the top or inside a function."""
    found: set[str] = set()

    def add(dotted: str) -> None:
        parts = dotted.split(".")
        if parts[:2] == ["docbatch", "domain"] and len(parts) > 2:
            found.add(".".join(parts[2:]))

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:  # ``from docbatch.domain.openai import render``
                if f"{node.module}.{alias.name}".removeprefix("docbatch.domain.") in modules:
                    add(f"{node.module}.{alias.name}")
                else:
                    add(node.module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
    return found & modules


def test_domain_modules_import_no_circle():
    """The domain reads bottom-up (closing <- waiting <- ledger <- jobs ...): no module
    imports one that imports it back, even from inside a function."""
    modules = _domain_modules()
    assert "openai.batches" in modules  # the subpackages are read too
    graph = {name: _domain_imports(path, set(modules)) - {name} for name, path in modules.items()}
    done: set[str] = set()
    circles: list[str] = []

    def visit(module: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(module, ())):
            if nxt in path:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(module)

    for module in graph:
        if module not in done:
            visit(module, [module])
    assert not circles, "\n".join(circles)
