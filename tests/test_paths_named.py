"""Comments and Markdown that name a module name one that exists: when a file moves
(schema/reuse.py became domain/reuse.py), every ``api/|domain/|schema/|worker/...py`` path
written in a comment, a docstring or a Markdown file moves with it."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.fixtures import ROOT

pytestmark = pytest.mark.fast

# A layer folder, then a path ending in .py; "docbatch/" in front is the same file (the
# package maps docbatch.<layer> to <layer>/). Not preceded by a path character, so
# "tests/.../api/x.py" or a URL's "/worker/x.py" is not taken for one.
NAMED = re.compile(r"(?<![\w/.-])(?:docbatch/)?((?:api|domain|schema|worker)/[\w/.-]*?\w\.py)\b")


def _tracked() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "*.py", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [name for name in out.stdout.split() if name != "tests/test_paths_named.py"]


def test_every_module_path_named_in_a_comment_or_markdown_file_exists():
    missing = []
    for name in _tracked():
        text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
        for match in NAMED.finditer(text):
            if not (ROOT / match.group(1)).is_file():
                line = text.count("\n", 0, match.start()) + 1
                missing.append(f"{name}:{line}: {match.group(0)}")
    assert missing == [], "paths that moved or never existed:\n" + "\n".join(missing)


def test_the_check_sees_a_moved_path():
    assert NAMED.search("see schema/reuse.py").group(1) == "schema/reuse.py"  # type: ignore[union-attr]
    assert NAMED.search("(docbatch/domain/reuse.py)").group(1) == "domain/reuse.py"  # type: ignore[union-attr]
    assert NAMED.search("tests/api/x.py") is None
