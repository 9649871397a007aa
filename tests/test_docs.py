"""The documentation site: what its pages promise holds (docs/, README.md).

`make docs` (mkdocs build --strict, in CI) checks links and anchors; these tests check
what a build cannot: the generated reference pages miss nothing, a code snippet users copy
works, and the user docs speak of no particular machine.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import sys
import time

import pytest

from tests.fixtures import ROOT

pytestmark = pytest.mark.fast

sys.path.insert(0, str(ROOT / "docs" / "gen"))
import cli_page  # noqa: E402
import metrics_page  # noqa: E402
import settings_page  # noqa: E402

USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _snippet(page: str, language: str = "python") -> str:
    text = (ROOT / "docs" / page).read_text()
    return re.search(rf"```{language}\n(.*?)```", text, re.S).group(1)  # type: ignore[union-attr]


def test_the_webhook_receiver_snippet_checks_docbatch_signatures():
    from docbatch.domain.webhooks import sign

    scope: dict[str, object] = {}
    exec(_snippet("how-to/webhooks.md"), scope)
    verify = scope["verify"]
    body = json.dumps({"event": "job.completed", "delivery_id": 1}).encode()
    now = int(time.time())
    header = sign("s3cret", now, body)
    assert verify("s3cret", header, body)  # type: ignore[operator]
    assert not verify("other", header, body)  # type: ignore[operator]
    assert not verify("s3cret", header, body + b" ")  # type: ignore[operator]
    old = sign("s3cret", now - 3600, body)
    assert not verify("s3cret", old, body)  # type: ignore[operator]
    assert not verify("s3cret", "t=x,v1=00", body)  # type: ignore[operator]
    # The snippet's own HMAC is docbatch's: same bytes, same digest.
    mac = hmac.new(b"s3cret", f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    assert header == f"t={now},v1={mac}"


def test_the_cli_page_has_every_command():
    from docbatch.cli import build_parser

    page = cli_page.render()
    commands = [sub.prog for sub, _ in cli_page._commands(build_parser())]
    assert "docbatch run" in commands and "docbatch keys create" in commands
    missing = [c for c in commands if f"## {c}\n" not in page]
    assert not missing, missing
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            assert set(action.choices) <= {c.split()[1] for c in commands}


def test_the_settings_page_has_every_setting():
    from docbatch.schema.settings import ModelConfig, Settings

    page = settings_page.render()
    for name in Settings.model_fields:
        assert f"`DOCBATCH_{name.upper()}`" in page, name
    for name in ModelConfig.model_fields:
        if name != "generation":
            assert f"`DOCBATCH_MODELS__<TASK>__{name.upper()}`" in page, name
    # The comment above a field in schema/settings.py is its description.
    assert "Folders schedules may read" in page


def test_the_metrics_page_lists_what_the_dashboards_read():
    page = metrics_page.render()
    for metric in (
        "docbatch_queue_depth",
        "docbatch_jobs",
        "docbatch_worker_documents_total",
        "docbatch_worker_model_latency_seconds_bucket",
        "docbatch_worker_gpu_memory_reserved_bytes",
    ):
        assert f"`{metric}`" in page, metric


def test_user_docs_name_no_particular_machine():
    """Figures say which hardware measured them; no "this box" or "here" for a dev VM."""
    words = re.compile(r"\b(this box|this machine|dev box|dev machine|here)\b", re.I)
    found = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
        for p in USER_DOCS
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if words.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 110, len(lines)
    headings = [line for line in lines if line.startswith("## ")]
    assert "## Coming from the OpenAI Batch API" in headings  # test_openai_batch runs it
