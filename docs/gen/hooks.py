"""mkdocs hooks: the reference pages generated from the code at every build.

``reference/cli.md`` (from the argparse parser), ``reference/rest.md`` and
``reference/openapi.json`` (from the FastAPI app's OpenAPI document),
``reference/settings.md`` (from ``Settings``), ``reference/metrics.md`` (from the
Prometheus metric definitions), and the repository's BENCHMARKS.md and CHANGELOG.md as
pages. None of them is committed under docs/, so none can go stale; `make docs` runs
``mkdocs build --strict``. To look at one without building the site::

    .venv/bin/python docs/gen/hooks.py /tmp/pages     # writes every generated page there
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import cli_page  # noqa: E402
import metrics_page  # noqa: E402
import rest_page  # noqa: E402
import settings_page  # noqa: E402


def _repo_page(name: str, note: str = "") -> Callable[[], str]:
    def render() -> str:
        text = (ROOT / name).read_text(encoding="utf-8")
        if not note:
            return text
        title, _, rest = text.partition("\n")
        return f"{title}\n\n!!! note\n    {note}\n{rest}"

    return render


# BENCHMARKS.md is the measurement log, written as the figures were taken: its "here" and
# "this box" are one machine, named at the top of its page.
BENCHMARK_MACHINE = (
    "The measurement log, kept as the figures were taken. Unless a section names another "
    "machine, every figure was measured on a shared 2-core x86_64 VM (AMD EPYC, 2 vCPUs, "
    '24 GiB, no GPU) with PostgreSQL 15 and Redis 7 on the same VM; "here" and "this '
    'box" below mean that machine. The summary with targets: [Performance](performance.md).'
)


PAGES: dict[str, Callable[[], str]] = {
    "reference/cli.md": cli_page.render,
    "reference/rest.md": rest_page.render,
    "reference/openapi.json": rest_page.render_json,
    "reference/settings.md": settings_page.render,
    "reference/metrics.md": metrics_page.render,
    "benchmarks.md": _repo_page("BENCHMARKS.md", BENCHMARK_MACHINE),
    "changelog.md": _repo_page("CHANGELOG.md"),
}


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for uri, render in PAGES.items():
        if files.get_file_from_path(uri) is not None:
            raise SystemExit(f"docs/{uri} is generated (docs/gen/hooks.py); delete the file")
        files.append(File.generated(config, uri, content=render()))
    return files


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "site-pages")
    for uri, render in PAGES.items():
        target = out / uri
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(), encoding="utf-8")
        print(target)
