"""OpenTelemetry spans, off by default: submit (the api) → unit claim → batch → write (the
worker), each carrying ``docbatch.job_id`` and ``docbatch.unit_id`` so a trace backend
links a job's spans across processes.

With DOCBATCH_OTLP_ENDPOINT unset (the default) nothing is imported and ``span`` is an
empty context manager. Set it (``http://collector:4318``) with the optional dependencies
installed (``pip install 'docbatch[otel]'``) and each process exports its spans over
OTLP/HTTP in batches. Example::

    with span("unit.write", job_id=job.id, unit_id=unit.id):
        ...
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("docbatch.tracing")
_tracer: Any = None
_provider: Any = None


def setup(endpoint: str, service: str) -> bool:
    """Export this process's spans to ``endpoint`` (OTLP/HTTP); False when it is empty or
    the OpenTelemetry SDK is not installed (a warning says which extra to add)."""
    global _tracer, _provider
    if not endpoint:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "DOCBATCH_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed: "
            "pip install 'docbatch[otel]'; no traces"
        )
        return False
    _provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
    _provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    _tracer = _provider.get_tracer("docbatch")
    return True


def enabled() -> bool:
    return _tracer is not None


def _attrs(attributes: dict[str, Any]) -> dict[str, Any]:
    return {f"docbatch.{k}": v for k, v in attributes.items() if v is not None}


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span named ``docbatch.<name>`` with ``docbatch.<key>`` attributes (None skipped),
    yielded (for ``annotate``); nothing at all, and None, when tracing is off."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(f"docbatch.{name}", attributes=_attrs(attributes)) as s:
        yield s


def annotate(current: Any, **attributes: Any) -> None:
    """Add attributes to a span from ``span`` (known only later: the job's id)."""
    if current is not None:
        current.set_attributes(_attrs(attributes))


def flush() -> None:
    if _provider is not None:
        _provider.force_flush()
