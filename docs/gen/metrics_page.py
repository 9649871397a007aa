"""reference/metrics.md: every Prometheus metric docbatch defines, found in the source of
``api/``, ``domain/`` and ``worker/`` (each ``Counter(...)``, ``Gauge(...)``,
``Histogram(...)``, ``Summary(...)`` and ``*MetricFamily(...)`` whose name is a literal),
with the names a scrape shows (a Counter ``x`` is exposed as ``x_total``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KINDS = {
    "Counter": "counter",
    "Gauge": "gauge",
    "Histogram": "histogram",
    "Summary": "summary",
    "CounterMetricFamily": "counter",
    "GaugeMetricFamily": "gauge",
    "HistogramMetricFamily": "histogram",
}
WHERE = {
    "api": "the api, `GET /metrics`",
    "domain": "the api, `GET /metrics`",
    "worker": "each model worker, `:DOCBATCH_WORKER_METRICS_PORT/metrics`",
}


def _labels(call: ast.Call) -> list[str]:
    node: ast.expr | None = call.args[2] if len(call.args) > 2 else None
    for kw in call.keywords:
        if kw.arg in ("labels", "labelnames"):
            node = kw.value
    if isinstance(node, ast.List | ast.Tuple):
        return [e.value for e in node.elts if isinstance(e, ast.Constant)]
    return []


def _exposed(name: str, kind: str) -> str:
    if kind == "counter":
        return f"`{name.removesuffix('_total')}_total`"
    if kind in ("histogram", "summary"):
        return f"`{name}_bucket`, `{name}_sum`, `{name}_count`".replace(
            f"`{name}_bucket`, ", "" if kind == "summary" else f"`{name}_bucket`, "
        )
    return f"`{name}`"


def metrics() -> list[tuple[str, str, str, list[str], str, str]]:
    """(name, kind, help, labels, where served, defining file) for every metric."""
    found = []
    for layer in ("api", "domain", "worker"):
        for path in sorted((ROOT / layer).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or len(node.args) < 2:
                    continue
                func = node.func
                fname = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                name, doc = node.args[0], node.args[1]
                if fname not in KINDS or not isinstance(name, ast.Constant):
                    continue
                if not isinstance(name.value, str) or not isinstance(doc, ast.Constant):
                    continue
                found.append(
                    (
                        name.value,
                        KINDS[fname],
                        str(doc.value),
                        _labels(node),
                        WHERE[layer],
                        str(path.relative_to(ROOT)),
                    )
                )
    return found


def render() -> str:
    lines = [
        "# Metrics reference",
        "",
        "Generated from the metric definitions in the code at every docs build. The api serves",
        "its metrics at `GET /metrics` (no key); each model worker serves its own on",
        "`DOCBATCH_WORKER_METRICS_PORT` (0, the default, turns that server off). How to scrape",
        "and chart them: [Monitoring](../operations/monitoring.md).",
        "",
        "| metric | type | labels | what | served by | defined in |",
        "|---|---|---|---|---|---|",
    ]
    for name, kind, doc, labels, where, path in metrics():
        shown = ", ".join(f"`{x}`" for x in labels) or "—"
        lines.append(f"| {_exposed(name, kind)} | {kind} | {shown} | {doc} | {where} | `{path}` |")
    return "\n".join(lines) + "\n"
