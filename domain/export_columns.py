"""The Parquet columns of a job's results: the same for every task, and typed per task.

Every task ``T`` of a job has ``T_status``, ``T_output`` (the output as JSON text, for
tools that want it whole), ``T_error``, ``T_model_id``, ``T_model_revision``,
``T_params`` (JSON text), ``T_reused`` and ``T_created_at``; then its typed columns
below, read from the output (``None`` where the document has no result for it). The
reference page (docs/reference/results.md) lists them; a test checks it does. Example::

    >>> [c.name for c in TYPED["tags"]]
    ['tags', 'source']      # columns tags_tags: list<struct<label, score>>, tags_source
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    """``<task>_<name>`` of type ``arrow()``, filled by ``read(output)``."""

    name: str
    arrow: Callable[[], Any]
    read: Callable[[dict[str, Any]], Any]
    what: str


def _pa() -> Any:
    import pyarrow as pa

    return pa


def _string() -> Any:
    return _pa().string()


def _scored() -> Any:
    pa = _pa()
    return pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))


def _spans(fields: list[tuple[str, str]]) -> Callable[[], Any]:
    def build() -> Any:
        pa = _pa()
        kinds = {"s": pa.string(), "i": pa.int64(), "f": pa.float64()}
        return pa.list_(pa.struct([(name, kinds[kind]) for name, kind in fields]))

    return build


def _key(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda out: out.get(name)


def _records(name: str, fields: list[str]) -> Callable[[dict[str, Any]], Any]:
    def read(out: dict[str, Any]) -> Any:
        items = out.get(name)
        if items is None:
            return None
        return [{f: item.get(f) for f in fields} for item in items]

    return read


_ENTITY = [("text", "s"), ("label", "s"), ("start", "i"), ("end", "i"), ("score", "f")]
_ANSWER = [("question", "s"), ("text", "s"), ("start", "i"), ("end", "i"), ("score", "f")]


def _usage() -> Any:
    pa = _pa()
    return pa.struct(
        [
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("total_tokens", pa.int64()),
        ]
    )


TYPED: dict[str, list[Column]] = {
    "summarize": [
        Column("summary", _string, _key("summary"), "the summary"),
        Column("method", _string, _key("method"), "extractive or abstractive"),
    ],
    "tags": [
        Column("tags", _scored, _records("tags", ["label", "score"]), "tags, best first"),
        Column("source", _string, _key("source"), "labels, labels+nli or keyphrases"),
    ],
    "translate": [
        Column("translation", _string, _key("translation"), "the translated text"),
        Column("source_lang", _string, _key("source_lang"), "the source language"),
        Column("target_lang", _string, _key("target_lang"), "the target language"),
    ],
    "classify": [
        Column("label", _string, _key("label"), "the best label"),
        Column("scores", _scored, _records("scores", ["label", "score"]), "every label's score"),
    ],
    "entities": [
        Column(
            "entities",
            _spans(_ENTITY),
            _records("entities", [f for f, _ in _ENTITY]),
            "entities with character offsets",
        ),
    ],
    "ask": [
        Column(
            "answers",
            _spans(_ANSWER),
            _records("answers", [f for f, _ in _ANSWER]),
            "one answer per question (text null below min_score)",
        ),
    ],
    "generate": [
        Column("text", _string, _key("text"), "the generated text"),
        Column("finish_reason", _string, _key("finish_reason"), "stop or length"),
        Column("usage", _usage, _key("usage"), "tokens in and out"),
    ],
    "embed": [
        Column("dim", lambda: _pa().int32(), _key("dim"), "vector dimension"),
    ],
}


def common() -> list[tuple[str, Any, str]]:
    """``(suffix, arrow type, what)`` of the columns every task has."""
    pa = _pa()
    ts = pa.timestamp("us", tz="UTC")
    return [
        ("status", pa.string(), "succeeded, failed, cancelled or pending"),
        ("output", pa.string(), "the whole output as JSON text, as in NDJSON"),
        ("error", pa.string(), "the reason, for failed and cancelled documents"),
        ("model_id", pa.string(), "the model that produced the result"),
        ("model_revision", pa.string(), "its resolved revision"),
        ("params", pa.string(), "the parameters in force, as JSON text"),
        ("reused", pa.bool_(), "copied from an earlier job's identical document"),
        ("created_at", ts, "when the result was written"),
    ]


def document_columns() -> list[tuple[str, Any, str]]:
    """``(name, arrow type, what)`` of the columns before the tasks'."""
    pa = _pa()
    return [
        ("job_id", pa.string(), "the job"),
        ("custom_id", pa.string(), "the document's id"),
        ("metadata", pa.string(), "the document's metadata as JSON text"),
        ("sha256", pa.string(), "a file's SHA-256 (documents submitted as files)"),
        ("parent", pa.string(), "custom_id of the file it came out of (attachment, archive)"),
        ("created_at", pa.timestamp("us", tz="UTC"), "when the job was submitted"),
    ]
