"""Prometheus metrics of one worker process, served on ``DOCBATCH_WORKER_METRICS_PORT``.

The model runs in the prefork child (concurrency 1), so the child owns the counters
and serves them: ``start_server`` is called once the handler is loaded. When the
child is recycled (``worker_max_tasks_per_child``) its successor binds the same port
(retrying while the old child lets go) and the counters start again from zero, which
Prometheus' ``rate()`` treats as a counter reset. Port 0 turns the server off.

The runner calls ``timed_batch`` around each model call and ``unit_written`` once a
unit's results are committed::

    with metrics.timed_batch("embed", [12, 40, 40]):
        outputs = handler.run_batch(texts, params)
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from docbatch.domain import tracing
from docbatch.domain.build import build_info

if TYPE_CHECKING:
    from docbatch.worker.handlers.base import Handler

log = logging.getLogger("docbatch.worker")

DOCUMENTS = Counter(
    "docbatch_worker_documents", "Documents whose result was written", ["task", "model", "status"]
)
CHUNKS = Counter("docbatch_worker_chunks", "Chunks of succeeded documents", ["task", "model"])
TOKENS_IN = Counter(
    "docbatch_worker_tokens_in", "Input tokens of succeeded documents", ["task", "model"]
)
TOKENS_OUT = Counter(
    "docbatch_worker_tokens_out",
    "Tokens of generated text (summaries, translations); 0 for vectors and tags",
    ["task", "model"],
)
UNITS = Counter(
    "docbatch_worker_units", "Units processed, by outcome", ["task", "model", "outcome"]
)
# Usage (docbatch.domain.accounting), per tenant when DOCBATCH_METRICS_TENANTS > 0 (else the
# tenant label reads "all"): the same figures as GET /v1/usage, counted once per unit.
USAGE_LABELS = ["tenant", "task", "model"]
USAGE_DOCUMENTS = Counter(
    "docbatch_usage_documents", "Documents computed (not reused), per tenant", USAGE_LABELS
)
USAGE_REUSED = Counter(
    "docbatch_usage_reused_documents", "Documents whose result was reused", USAGE_LABELS
)
USAGE_TOKENS_IN = Counter("docbatch_usage_input_tokens", "Input tokens computed", USAGE_LABELS)
USAGE_TOKENS_OUT = Counter("docbatch_usage_generated_tokens", "Tokens generated", USAGE_LABELS)
USAGE_SECONDS = Counter(
    "docbatch_usage_model_seconds", "Seconds of the worker's compute", USAGE_LABELS
)
BATCH_ROWS = Histogram(
    "docbatch_worker_batch_size",
    "Chunks per model batch",
    ["task", "model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
BATCH_TOKENS = Histogram(
    "docbatch_worker_batch_tokens",
    "Padded tokens per model batch (longest chunk x rows)",
    ["task", "model"],
    buckets=(128, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
)
MODEL_SECONDS = Histogram(
    "docbatch_worker_model_latency_seconds",
    "Seconds per model batch call",
    ["task", "model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

QUEUE_WAIT = Histogram(
    "docbatch_unit_queue_wait_seconds",
    "Seconds from a unit's publication (or its last republication) to its claim",
    ["task"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
JOB_SECONDS = Histogram(
    "docbatch_job_duration_seconds",
    "Seconds from a job's submission to its end, observed by the worker that ended it",
    ["status"],
    buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600),
)

WEBHOOK_ATTEMPTS = Counter(
    "docbatch_webhook_attempts",
    "Webhook tries, by outcome (delivered, failed: will retry, gave_up: no tries left)",
    ["outcome"],
)
WEBHOOK_LAG = Histogram(
    "docbatch_webhook_delivery_lag_seconds",
    "Seconds from a delivery being queued (its job ended) to the receiver's 2xx",
    buckets=(0.1, 0.5, 1, 2, 5, 15, 60, 300, 900, 3600, 4 * 3600),
)
REPUBLISHED = Counter(
    "docbatch_reconciler_republished",
    "Messages the reconciler sent again, by kind (unit, cancel, webhook); steadily above 0 "
    "means messages keep getting lost (a Redis without persistence, evictions)",
    ["kind"],
)
RECONCILE_SECONDS = Histogram(
    "docbatch_reconciler_pass_seconds",
    "Seconds per reconciler pass",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

EXTRACT_FILES = Counter(
    "docbatch_extract_files",
    "Files extracted, by kind (pdf, docx, html, mail, ...; 'unknown' when it failed) and status",
    ["kind", "status"],
)
EXTRACT_PAGES = Counter("docbatch_extract_pages", "Pages of the files extracted", ["kind"])
EXTRACT_FAILURES = Counter(
    "docbatch_extract_failures",
    "Files that failed to extract, by reason (time_limit, memory, too_large, crashed, "
    "nesting, unsupported, encrypted, other)",
    ["reason"],
)
EXTRACT_SECONDS = Histogram(
    "docbatch_extract_unit_seconds",
    "Seconds to extract one unit's files",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
_REASONS = (
    ("time_limit", ("time limit", "timed out", "seconds")),
    ("memory", ("memory",)),
    ("too_large", ("limit", "too large", "too big", "bomb")),
    ("crashed", ("crashed",)),
    ("nesting", ("nested",)),
    ("encrypted", ("encrypted", "password")),
    ("unsupported", ("unsupported", "not a", "unknown format", "cannot read")),
)

build_info(component="worker")

_started = threading.Lock()
_port: int | None = None


@contextmanager
def timed_batch(task: str, model: str, lengths: list[int]) -> Iterator[None]:
    """Time one model call; records only batches that returned (failed ones are split).
    ``model`` is the deployment's name (a task's default: the task's)."""
    start = time.perf_counter()
    with tracing.span("batch", task=task, rows=len(lengths), tokens=max(lengths, default=0)):
        yield
    MODEL_SECONDS.labels(task, model).observe(time.perf_counter() - start)
    BATCH_ROWS.labels(task, model).observe(len(lengths))
    BATCH_TOKENS.labels(task, model).observe(max(lengths, default=0) * len(lengths))


def claimed(task: str, published_at: dt.datetime | None) -> None:
    """A unit was claimed: how long it waited in its queue."""
    if published_at is not None:
        wait = (dt.datetime.now(dt.UTC) - _aware(published_at)).total_seconds()
        QUEUE_WAIT.labels(task).observe(max(wait, 0.0))


def job_finished(status: str, created_at: dt.datetime | None) -> None:
    if created_at is not None:
        seconds = (dt.datetime.now(dt.UTC) - _aware(created_at)).total_seconds()
        JOB_SECONDS.labels(status).observe(max(seconds, 0.0))


def failure_reason(error: str | None) -> str:
    """A bounded label for an extraction's error message."""
    text = (error or "").lower()
    for reason, words in _REASONS:
        if any(w in text for w in words):
            return reason
    return "other"


def extracted(outcomes: list[tuple[str, str, int, str | None]], seconds: float) -> None:
    """A written extract unit: (kind, status, pages, error) per file, and its seconds."""
    EXTRACT_SECONDS.observe(seconds)
    for kind, status, pages, error in outcomes:
        EXTRACT_FILES.labels(kind, status).inc()
        if pages:
            EXTRACT_PAGES.labels(kind).inc(pages)
        if status == "failed":
            EXTRACT_FAILURES.labels(failure_reason(error)).inc()


def webhook_attempt(delivered: bool, last: bool, queued_at: dt.datetime | None) -> None:
    outcome = "delivered" if delivered else ("gave_up" if last else "failed")
    WEBHOOK_ATTEMPTS.labels(outcome).inc()
    if delivered and queued_at is not None:
        lag = (dt.datetime.now(dt.UTC) - _aware(queued_at)).total_seconds()
        WEBHOOK_LAG.observe(max(lag, 0.0))


def reconciled(units: int, cancels: int, webhooks: int, seconds: float) -> None:
    for kind, count in (("unit", units), ("cancel", cancels), ("webhook", webhooks)):
        REPUBLISHED.labels(kind).inc(count)
    RECONCILE_SECONDS.observe(seconds)


def _aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)  # SQLite drops the zone


def _generated_tokens(handler: Handler, output: dict[str, Any] | None) -> int:
    counted = ((output or {}).get("usage") or {}).get("completion_tokens")
    if isinstance(counted, int):  # generate counts its own (every call of a map-reduce)
        return counted
    text = (output or {}).get("summary") or (output or {}).get("translation")
    if not isinstance(text, str) or handler.tokenizer is None:
        return 0
    return len(handler.tokenizer(text, add_special_tokens=False)["input_ids"])


def unit_written(
    handler: Handler, outcome: str, rows: list[dict[str, Any]], chunks: int, tokens: int
) -> None:
    """Count a committed unit: its documents by status, chunks and tokens in and out."""
    task, model = handler.task, handler.deployment
    UNITS.labels(task, model, outcome).inc()
    out = 0
    for row in rows:
        DOCUMENTS.labels(task, model, row["status"]).inc()
        if row["status"] == "succeeded":
            out += _generated_tokens(handler, row["output"])
    CHUNKS.labels(task, model).inc(chunks)
    TOKENS_IN.labels(task, model).inc(tokens)
    TOKENS_OUT.labels(task, model).inc(out)


def _gpu_gauges() -> None:
    import torch

    if not torch.cuda.is_available():
        return
    device = torch.cuda.current_device()
    allocated = Gauge(
        "docbatch_worker_gpu_memory_allocated_bytes", "torch.cuda.memory_allocated", ["device"]
    )
    reserved = Gauge(
        "docbatch_worker_gpu_memory_reserved_bytes", "torch.cuda.memory_reserved", ["device"]
    )
    allocated.labels(str(device)).set_function(lambda: torch.cuda.memory_allocated(device))
    total = Gauge(
        "docbatch_worker_gpu_memory_total_bytes", "The GPU's memory (its total)", ["device"]
    )
    size = torch.cuda.get_device_properties(device).total_memory
    total.labels(str(device)).set(size)
    reserved.labels(str(device)).set_function(lambda: torch.cuda.memory_reserved(device))


def serve_pool(port: int) -> None:
    """Serve /metrics on ``port`` from a prefork worker's main process, summing what every
    pool child recorded (the extract worker runs one child per core; each writes its
    values under PROMETHEUS_MULTIPROC_DIR, which ``docbatch worker`` set before anything
    imported prometheus_client)."""
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(port, registry=registry)
    log.info("worker metrics (all pool processes) on :%d/metrics", port)


def start_server(port: int, attempts: int = 60, gpu: bool = True) -> None:
    """Serve /metrics on ``port`` from this process (once); 0 means off; ``gpu``: with the
    GPU memory gauges (a model worker).

    Binding retries in the background for a while: a recycled pool child's predecessor
    may still hold the port for a moment.
    """
    global _port
    with _started:
        if port <= 0 or _port is not None:
            return
        _port = port
    try:
        if gpu:
            _gpu_gauges()
    except Exception:  # metrics must never stop a worker
        log.exception("GPU memory gauges unavailable")

    def bind() -> None:
        for attempt in range(attempts):
            try:
                start_http_server(port)
                log.info("worker metrics on :%d/metrics", port)
                return
            except OSError as exc:
                if attempt == attempts - 1:
                    log.error("worker metrics: cannot bind port %d: %s", port, exc)
                time.sleep(1.0)

    threading.Thread(target=bind, name="metrics-bind", daemon=True).start()


def used(tenant: str, task: str, model: str, documents: int, reused: int, tally: Any) -> None:
    """Count a closed unit's usage (after its commit); ``tenant`` "all" unless labelled."""
    labels = (tenant, task, model)
    USAGE_DOCUMENTS.labels(*labels).inc(documents)
    USAGE_REUSED.labels(*labels).inc(reused)
    USAGE_TOKENS_IN.labels(*labels).inc(tally.input_tokens)
    USAGE_TOKENS_OUT.labels(*labels).inc(tally.generated_tokens)
    USAGE_SECONDS.labels(*labels).inc(tally.model_seconds)
