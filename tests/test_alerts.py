"""The shipped alerts and the Grafana dashboard, checked against what docbatch exports.

- Prometheus' own ``promtool`` parses every alert and runs the unit tests of
  ops/prometheus/alerts_test.yml through its rule engine (``make alerts-check`` installs
  promtool; CI runs it);
- every metric the alerts and the dashboard query is in the metric catalogue generated
  from the code (docs/gen/metrics_page.py), or Flower's, read from its installed source;
  every label they match or group by is one that metric has (or a scrape target label).
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs/gen"))
sys.path.insert(0, str(ROOT / "ops/prometheus"))
import check_alerts  # noqa: E402
from metrics_page import metrics  # noqa: E402

# Labels Prometheus adds from the scrape target (and Kubernetes service discovery).
TARGET_LABELS = {"job", "instance", "pod", "namespace", "container", "node"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk"}
AGGREGATIONS |= {"bottomk", "quantile", "count_values", "limitk", "limit_ratio"}
KEYWORDS = GROUPING | AGGREGATIONS | {"bool", "and", "or", "unless", "offset", "atan2", "inf"}
TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"'  # a string
    r"|\[[^\]]*\]"  # a range
    r"|\$\w+"  # a Grafana variable
    r"|\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|s|m|h|d|w|y)?\b"  # a number or a duration
    r"|[A-Za-z_:][A-Za-z0-9_:]*"  # a name
    r"|\S"
)
NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def catalogue() -> dict[str, set[str]]:
    """Every series name docbatch and Flower export, with its labels."""
    defined = [(name, kind, set(labels)) for name, kind, _doc, labels, *_ in metrics()]
    flower = Path(__import__("flower").__file__).parent / "events.py"
    for node in ast.walk(ast.parse(flower.read_text())):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.args[0].value
            func = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if isinstance(name, str) and name.startswith("flower_"):
                labels = node.args[2] if len(node.args) > 2 else None
                kind = "histogram" if func == "Histogram" else func.lower()
                names = [e.value for e in getattr(labels, "elts", [])]
                defined.append((name, "counter" if "Counter" in func else kind, set(names)))
    exposed: dict[str, set[str]] = {}
    for name, kind, labels in defined:
        if kind == "counter":
            exposed[name.removesuffix("_total") + "_total"] = labels
        elif kind in ("histogram", "summary"):
            exposed[f"{name}_bucket"] = labels | {"le"}
            exposed[f"{name}_sum"] = exposed[f"{name}_count"] = labels
        else:
            exposed[name] = labels
    return exposed


def selectors(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """(series name, labels it matches on) of every selector in a PromQL expression, and
    every label named in a by/without/on/ignoring/group_* list."""
    tokens = TOKEN.findall(expr)
    found: list[tuple[str, set[str]]] = []
    grouped: set[str] = set()
    i = 0
    while i < len(tokens):
        tok, nxt = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in GROUPING and nxt == "(":
            end = tokens.index(")", i)
            grouped |= {t for t in tokens[i + 2 : end] if NAME.fullmatch(t)}
            i = end + 1
            continue
        if NAME.fullmatch(tok) and tok not in KEYWORDS and nxt != "(":
            matched: set[str] = set()
            if nxt == "{":
                end = tokens.index("}", i)
                matched = {t for t in tokens[i + 2 : end] if NAME.fullmatch(t)}
                i = end
            found.append((tok, matched))
        i += 1
    return found, grouped


def expressions() -> dict[str, str]:
    """Every PromQL expression shipped: the alerts' and the dashboard panels'."""
    exprs = {}
    for group in check_alerts.rule_groups()["groups"]:
        for rule in group["rules"]:
            exprs[f"alert {rule['alert']}"] = rule["expr"]
    dashboard = json.loads((ROOT / "ops/grafana/dashboards/docbatch.json").read_text())
    for panel in dashboard["panels"]:
        for n, target in enumerate(panel.get("targets", [])):
            exprs[f"panel {panel['title']!r} #{n}"] = target["expr"]
    return exprs


@pytest.mark.fast
def test_the_expression_reader_finds_names_and_labels():
    found, grouped = selectors(
        'sum by (task, le) (rate(x_bucket{task!="a", model=~"b"}[5m])) / on (task) y offset 5m'
        ' > 1e9 unless label_replace(z, "task", "t", "", "")'
    )
    assert found == [("x_bucket", {"task", "model"}), ("y", set()), ("z", set())]
    assert grouped == {"task", "le"}


@pytest.mark.fast
def test_alerts_and_dashboard_query_only_metrics_and_labels_that_exist():
    known = catalogue()
    assert "docbatch_worker_units_total" in known and "flower_worker_online" in known
    problems = []
    for where, expr in expressions().items():
        found, grouped = selectors(expr)
        assert found, f"{where}: no metric in {expr!r}"
        available = set(TARGET_LABELS)
        for name, matched in found:
            if name not in known:
                problems.append(f"{where}: {name} is not a metric docbatch or Flower exports")
                continue
            available |= known[name]
            if extra := matched - known[name] - TARGET_LABELS:
                problems.append(f"{where}: {name} has no label {sorted(extra)}")
        if extra := grouped - available:
            problems.append(f"{where}: groups by {sorted(extra)}, which no metric of it has")
    assert problems == []
    # Panels per task and per tenant.
    titles = " ".join(expressions())
    assert "per task" in titles and "tenant" in titles


@pytest.mark.fast
def test_every_alert_has_a_test_that_expects_it_firing():
    names = check_alerts.alert_names()
    assert {
        "DocbatchBacklogWithNoWorker",
        "DocbatchOldestUnitTooOld",
        "DocbatchFailedUnitRatio",
        "DocbatchWebhookBacklog",
        "DocbatchReconcilerRepublishing",
        "DocbatchGpuMemoryNearLimit",
    } <= set(names)
    assert check_alerts.untested() == []


@pytest.mark.fast
def test_promtool_checks_the_rules_and_runs_their_unit_tests():
    tool = check_alerts.promtool()
    if tool is None:
        pytest.skip("promtool is not installed: `make alerts-check` installs it")
    code, output = check_alerts.run(tool)
    assert code == 0, output
    assert "SUCCESS" in output
    # A broken threshold is caught: the same tests fail on a rule that never fires.
    rule = yaml.safe_load(check_alerts.RULE.read_text())
    for r in rule["spec"]["groups"][0]["rules"]:
        if r.get("alert") == "DocbatchOldestUnitTooOld":
            r["expr"] = r["expr"].replace("3600", "36000")
    original = check_alerts.rule_groups
    check_alerts.rule_groups = lambda: {"groups": rule["spec"]["groups"]}
    try:
        code, output = check_alerts.run(tool)
    finally:
        check_alerts.rule_groups = original
    assert code != 0 and "DocbatchOldestUnitTooOld" in output
