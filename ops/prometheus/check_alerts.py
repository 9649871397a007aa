"""The shipped alerts through Prometheus' own tools (`make alerts-check`, CI).

The rule groups of ops/k8s/monitoring/prometheusrule.yaml (the PrometheusRule the
prometheus-operator loads) are written to a plain rules file, then:

- ``promtool check rules``: every expression and template parses;
- ``promtool test rules ops/prometheus/alerts_test.yml``: each alert fires, or stays
  quiet, on the series a unit test feeds Prometheus' rule engine;
- every alert has a test that expects it firing (a new alert without one fails here).

Exit 0 when all pass, 1 when one fails, 2 when promtool is missing (``make alerts-check``
installs it first: ops/prometheus/install-promtool.sh).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RULE = ROOT / "ops/k8s/monitoring/prometheusrule.yaml"
TESTS = HERE / "alerts_test.yml"


def rule_groups() -> dict[str, Any]:
    """The PrometheusRule's groups as a Prometheus rules file."""
    return {"groups": yaml.safe_load(RULE.read_text())["spec"]["groups"]}


def alert_names() -> list[str]:
    return [r["alert"] for g in rule_groups()["groups"] for r in g["rules"] if "alert" in r]


def untested() -> list[str]:
    """Alerts no unit test expects firing."""
    tests = yaml.safe_load(TESTS.read_text())["tests"]
    fired = {
        t["alertname"] for case in tests for t in case.get("alert_rule_test", []) if t["exp_alerts"]
    }
    return [name for name in alert_names() if name not in fired]


def promtool() -> str | None:
    venv = Path(sys.executable).parent / "promtool"
    return str(venv) if venv.exists() else shutil.which("promtool")


def run(tool: str) -> tuple[int, str]:
    """(exit code, what promtool printed) of the check and the unit tests."""
    with tempfile.TemporaryDirectory(prefix="docbatch-alerts-") as tmp:
        (Path(tmp) / "alerts.yml").write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
        shutil.copy(TESTS, Path(tmp) / TESTS.name)
        output = []
        for args in (["check", "rules", "alerts.yml"], ["test", "rules", TESTS.name]):
            done = subprocess.run([tool, *args], cwd=tmp, capture_output=True, text=True)
            output.append(f"$ promtool {' '.join(args)}\n{done.stdout}{done.stderr}")
            if done.returncode != 0:
                return done.returncode, "\n".join(output)
    return 0, "\n".join(output)


def main() -> int:
    tool = promtool()
    if tool is None:
        print(
            "check_alerts: promtool not found; `make alerts-check` installs it "
            "(ops/prometheus/install-promtool.sh, from Debian's prometheus package)",
            file=sys.stderr,
        )
        return 2
    code, output = run(tool)
    print(output)
    missing = untested()
    if missing:
        print(f"check_alerts: no test expects these alerts firing: {', '.join(missing)}")
        return 1
    return 1 if code else 0


if __name__ == "__main__":
    sys.exit(main())
