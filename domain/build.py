"""``docbatch_build_info``: the version every process runs, for dashboards and alerts that
compare replicas during a rollout (``count by (version) (docbatch_build_info)``)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.registry import REGISTRY as DEFAULT_REGISTRY


def docbatch_version() -> str:
    try:
        return version("docbatch")
    except PackageNotFoundError:
        return "0+unknown"


def build_info(registry: CollectorRegistry = DEFAULT_REGISTRY, component: str = "") -> Gauge:
    """Register ``docbatch_build_info{version, python, component} 1`` in ``registry``."""
    gauge = Gauge(
        "docbatch_build_info",
        "Always 1; the labels say which docbatch version and Python this process runs",
        ["version", "python", "component"],
        registry=registry,
        multiprocess_mode="max",  # a prefork pool's children report one series
    )
    gauge.labels(docbatch_version(), platform.python_version(), component).set(1)
    return gauge
