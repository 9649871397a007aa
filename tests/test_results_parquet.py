"""Parquet a warehouse can load: document columns, per-task provenance and typed columns,
read back with pyarrow (issue 26 item 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from docbatch.domain.export import _schema
from docbatch.domain.export_columns import TYPED
from tests.fixtures import ROOT

SCORED = pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))
UTC = pa.timestamp("us", tz="UTC")

# Outputs shaped as each handler writes them (worker/handlers/*.py reduce()).
SAMPLES = {
    "summarize": {"summary": "A short one.", "method": "extractive", "sentences": [0]},
    "tags": {"source": "labels+nli", "tags": [{"label": "net", "score": 0.9, "similarity": 0.5}]},
    "translate": {"translation": "Hallo", "source_lang": "en", "target_lang": "de"},
    "classify": {"label": "POSITIVE", "scores": [{"label": "POSITIVE", "score": 0.99}]},
    "entities": {
        "entities": [{"text": "Ada", "label": "PER", "start": 0, "end": 3, "score": 0.98}],
        "groups": {},
    },
    "ask": {
        "answers": [
            {"question": "who?", "text": "Ada", "start": 0, "end": 3, "score": 0.7},
            {"question": "when?", "text": None, "start": None, "end": None, "score": 0.0},
        ]
    },
    "generate": {
        "text": "Done.",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    },
    "embed": {"dim": 384, "chunks": [[0, 5, 2]]},
}


def test_every_task_has_typed_columns_that_hold_its_output():
    """Each task's typed columns take what its handler writes (a mismatch between an output
    shape and its Arrow type fails here, not in a user's export)."""
    tasks = list(SAMPLES)
    schema = _schema(tasks, {})
    row: dict[str, list[object]] = {f.name: [None] for f in schema}
    for task, output in SAMPLES.items():
        for column in TYPED[task]:
            row[f"{task}_{column.name}"] = [column.read(output)]
    table = pa.Table.from_pydict(row, schema=schema)
    assert table.column("tags_tags").to_pylist() == [[{"label": "net", "score": 0.9}]]
    assert table.column("ask_answers").to_pylist()[0][1]["text"] is None
    assert table.column("generate_usage").to_pylist() == [
        {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    ]
    assert schema.field("classify_scores").type == SCORED
    assert schema.field("entities_entities").type.value_type.field("start").type == pa.int64()


def test_the_reference_lists_every_parquet_column():
    page = (ROOT / "docs" / "reference" / "results.md").read_text()
    for task, columns in TYPED.items():
        for column in columns:
            assert f"`{task}_{column.name}`" in page, (task, column.name)
    for name in (
        "job_id",
        "metadata",
        "sha256",
        "parent",
        "<task>_model_revision",
        "<task>_reused",
    ):
        assert f"`{name}`" in page, name


def test_docbatch_run_writes_typed_parquet(tmp_path):
    from tests.files import PAGES, make_email, make_pdf

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "q3.pdf").write_bytes(make_pdf([f"{p} " * 4 for p in PAGES]))
    (inbox / "mail.eml").write_bytes(make_email(make_pdf(PAGES[:1])))
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        json.dumps(
            {
                "custom_id": "sockets",
                "text": "Open a TCP socket, send bytes and close the connection when done.",
                "metadata": {"team": "net", "year": 2026},
            }
        )
        + "\n"
    )
    out = tmp_path / "out.parquet"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCBATCH_")}
    proc = subprocess.run(
        [sys.executable, "-m", "docbatch.cli", "run", str(docs), str(inbox)]
        + ["--task", "tags", "--task", "summarize", "-o", str(out), "--quiet"]
        + ["--workdir", str(tmp_path / "work")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pq.read_table(out)
    schema = table.schema
    for name, kind in [
        ("job_id", pa.string()),
        ("custom_id", pa.string()),
        ("metadata", pa.string()),
        ("sha256", pa.string()),
        ("parent", pa.string()),
        ("created_at", UTC),
        ("tags_tags", SCORED),
        ("tags_model_id", pa.string()),
        ("tags_model_revision", pa.string()),
        ("tags_params", pa.string()),
        ("tags_reused", pa.bool_()),
        ("tags_created_at", UTC),
        ("tags_output", pa.string()),
        ("summarize_summary", pa.string()),
    ]:
        assert schema.field(name).type == kind, name
    rows = {r["custom_id"]: r for r in table.to_pylist()}
    assert set(rows) == {"sockets", "q3.pdf", "mail.eml", "mail.eml/report.pdf"}
    sockets = rows["sockets"]
    assert sockets["job_id"].startswith("job_")
    assert json.loads(sockets["metadata"]) == {"team": "net", "year": 2026}
    assert sockets["sha256"] is None and sockets["parent"] is None
    tags = sockets["tags_tags"]
    assert tags and all(set(t) == {"label", "score"} for t in tags)
    assert json.loads(sockets["tags_output"])["tags"][0]["label"] == tags[0]["label"]
    assert sockets["tags_model_id"] and sockets["tags_reused"] is False
    assert sockets["summarize_summary"] and sockets["summarize_status"] == "succeeded"
    assert len(rows["q3.pdf"]["sha256"]) == 64
    assert rows["mail.eml/report.pdf"]["parent"] == "mail.eml"
    assert rows["mail.eml/report.pdf"]["sha256"] != rows["q3.pdf"]["sha256"]
