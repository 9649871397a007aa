"""The fleet list (ops/deployments.yaml), read and checked once for every generator.

``load()`` returns its entries checked by docbatch's own rules (the Deployment model and
the fleet's: known task, unique names; the same check every docbatch process makes at
start), each as a ``Worker``: what the Compose and Kubernetes generators need to write
its service or Deployment, its queue and its KEDA trigger.

    python ops/compose_workers.py      # docker-compose.yml's workers, the CPU override,
                                       # the Prometheus targets
    python ops/k8s/generate.py         # ops/k8s/base/workers.yaml, keda.yaml, ...
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
LIST = ROOT / "ops" / "deployments.yaml"


@dataclass(frozen=True)
class Worker:
    """One kind of worker: a deployment's (or the extract stage's)."""

    name: str  # the deployment's name ("extract" for the stage)
    task: str
    queue: str
    worker: dict[str, Any]  # the entry's `worker:` block

    @property
    def is_default(self) -> bool:
        return self.name == self.task

    @property
    def serve_args(self) -> list[str]:
        """``docbatch worker`` arguments: its deployment, then the entry's own."""
        which = ["--task", self.task] if self.is_default else ["--deployment", self.name]
        return [*which, *(str(a) for a in self.worker.get("args", []))]

    @property
    def gpu(self) -> int | None:
        """The host GPU index Compose reserves by default; None: a CPU worker."""
        gpu = self.worker.get("gpu")
        if gpu is None or gpu is False:
            return None
        return 0 if gpu is True else int(gpu)

    @property
    def gpu_variable(self) -> str:
        """The .env variable that moves its Compose service to another GPU: EMBED_GPU."""
        return re.sub(r"[^A-Z0-9]", "_", self.name.upper()) + "_GPU"


@dataclass(frozen=True)
class Fleet:
    spec: dict[str, Any]  # the whole file
    workers: list[Worker]  # the deployments', in the list's order, then extract's
    # The deployments as docbatch reads them (DOCBATCH_DEPLOYMENTS), without `worker:`.
    deployments: list[dict[str, Any]]

    @property
    def queue_prefix(self) -> str:
        return str(self.spec.get("queue_prefix", "docbatch"))

    def deployments_json(self) -> str:
        return json.dumps(self.deployments, separators=(",", ":"), sort_keys=True)


def load(path: Path = LIST, spec: dict[str, Any] | None = None) -> Fleet:
    """The list at ``path`` (or ``spec``, already read), checked as docbatch checks it;
    raises SystemExit naming the problem."""
    from pydantic import ValidationError

    from docbatch.schema.settings import Deployment, Settings

    if spec is None:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(spec, dict) or not isinstance(spec.get("deployments"), list):
        raise SystemExit(f"{path}: expected a mapping with a `deployments:` list")
    prefix = str(spec.get("queue_prefix", "docbatch"))
    try:
        entries = [Deployment.model_validate(item) for item in spec["deployments"]]
        settings = Settings(deployments=entries, deployments_file="", queue_prefix=prefix)
    except (ValidationError, ValueError) as exc:
        raise SystemExit(f"{path}: {exc}") from None
    workers = [Worker(d.name, d.task, settings.queue_for(d.name), dict(d.worker)) for d in entries]
    extract = (spec.get("extract") or {}).get("worker")
    if extract is not None:
        workers.append(Worker("extract", "extract", settings.queue_for("extract"), extract))
    deployments = [{k: v for k, v in item.items() if k != "worker"} for item in spec["deployments"]]
    return Fleet(spec, workers, deployments)


def write_or_check(files: dict[Path, str], check: bool) -> int:
    """Write the generated ``files`` (path -> text); with ``check``, write nothing and
    fail (1) naming those whose text on disk differs, as CI's `make manifests-check` does."""
    stale = []
    for path, text in files.items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.write_text(text)
    if stale:
        print(f"stale (run `make manifests`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0
