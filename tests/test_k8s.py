"""ops/k8s: the kustomize base and overlays rendered by the real `kubectl kustomize` and
validated offline against the Kubernetes and KEDA schemas (what `make manifests` and CI
run), and what a platform team checks in them."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from docbatch.schema.settings import TASKS, Settings
from docbatch.schema.tables import EXTRACT

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ops/k8s"))
import generate  # noqa: E402
import validate  # noqa: E402


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay: validate.render(overlay) for overlay in validate.OVERLAYS}


def _by(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.fast
def test_every_overlay_validates_and_a_broken_object_does_not(rendered):
    assert validate.main() == 0
    assert generate.main(["--check"]) == 0  # base/*.yaml are what deployments.yaml makes
    docs = rendered["gpu"]
    deployment = copy.deepcopy(_by(docs, "Deployment")["docbatch-api"])
    deployment["spec"]["replicaz"] = 2
    scaled = copy.deepcopy(_by(docs, "ScaledObject")["docbatch-worker-embed"])
    scaled["spec"]["minReplicaCount"] = "none"
    latest = copy.deepcopy(_by(docs, "Deployment")["docbatch-beat"])
    latest["spec"]["template"]["spec"]["containers"][0]["image"] = "docbatch-slim:latest"
    errors = validate.problems([deployment, scaled, latest])
    assert len(errors) == 3, errors
    assert "replicaz" in errors[0] and "minReplicaCount" in errors[1] and "latest" in errors[2]


@pytest.mark.fast
def test_workers_scale_from_zero_on_their_backlog(rendered):
    """Each worker scales on every unit queued in Postgres for its queue (the api's
    docbatch_queued_units), not on Redis, where the fair dispatcher keeps only a few."""
    docs = rendered["gpu"]
    scaled = _by(docs, "ScaledObject")
    config = _by(docs, "ConfigMap")["docbatch-settings"]["data"]
    assert "DOCBATCH_BROKER_URL" not in config  # the password lives in the Secret
    secret = _by(docs, "Secret")["docbatch-secrets"]["stringData"]
    assert {"DOCBATCH_BROKER_URL", "DOCBATCH_DATABASE_URL", "DOCBATCH_ADMIN_KEY"} <= set(secret)
    assert set(scaled) == {f"docbatch-worker-{t}" for t in (*TASKS, EXTRACT)}
    for task in (*TASKS, EXTRACT):
        spec = scaled[f"docbatch-worker-{task}"]["spec"]
        assert spec["minReplicaCount"] == 0
        queue = Settings(queue_prefix=config["DOCBATCH_QUEUE_PREFIX"]).queue_for(task)
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "prometheus"
        assert f'docbatch_queued_units{{queue="{queue}"}}' in trigger["metadata"]["query"]
        assert trigger["metadata"]["activationThreshold"] == "0"  # one unit starts a pod


@pytest.mark.fast
def test_gpu_and_cpu_overlays_and_thread_limits(rendered):
    for overlay, gpus in (("gpu", 1), ("cpu-only", None)):
        deployments = _by(rendered[overlay], "Deployment")
        for task in TASKS:
            pod = deployments[f"docbatch-worker-{task}"]["spec"]["template"]["spec"]
            (c,) = pod["containers"]
            assert c["command"] == ["docbatch", "worker", "--task", task]
            assert c["resources"]["limits"].get("nvidia.com/gpu") == gpus, (overlay, task)
            env = {e["name"]: e.get("value") for e in c["env"]}
            # Threads = the CPU limit: pods sharing a big node do not each take every core.
            assert env["DOCBATCH_TORCH_THREADS"] == c["resources"]["limits"]["cpu"]
        extract = deployments["docbatch-worker-extract"]["spec"]["template"]["spec"]
        assert "nvidia.com/gpu" not in extract["containers"][0]["resources"]["limits"]
        assert "tolerations" not in extract


@pytest.mark.fast
def test_rollouts_run_safely(rendered):
    docs = rendered["production"]
    deployments = _by(docs, "Deployment")
    assert "initContainers" not in deployments["docbatch-api"]["spec"]["template"]["spec"]
    (migrate,) = _by(docs, "Job")["docbatch-migrate"]["spec"]["template"]["spec"]["containers"]
    assert migrate["command"][:2] == ["docbatch", "migrate"]
    _fill_job_writes_what_the_workers_read(docs)
    budgets = _by(docs, "PodDisruptionBudget")
    assert "docbatch-api" in budgets and "docbatch-worker-embed" in budgets
    assert deployments["docbatch-beat"]["spec"]["strategy"]["type"] == "Recreate"
    assert deployments["docbatch-maintenance"]["spec"]["replicas"] >= 1
    assert deployments["docbatch-api"]["spec"]["replicas"] == 3
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert "cpu" in c["resources"]["limits"], name
            if name != "docbatch-api" and name != "docbatch-flower":
                assert "livenessProbe" in c, name
    for name in ("docbatch-worker-embed", "docbatch-webhooks", "docbatch-maintenance"):
        (c,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert "readinessProbe" in c, name
    ingress = _by(docs, "Ingress")["docbatch"]["spec"]
    assert ingress["tls"] and {p["path"] for p in ingress["rules"][0]["http"]["paths"]} == {
        "/v1",
        "/ui",
    }
    assert _by(docs, "NetworkPolicy")
    images = {
        c["image"]
        for d in deployments.values()
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert all(i.startswith("registry.example.com/") and i.endswith(":0.1.0") for i in images)


def _fill_job_writes_what_the_workers_read(docs: list[dict[str, Any]]) -> None:
    """The models-fill Job plans from the workers' own settings, into the volume and
    HF_HOME they read, and its extra list parses."""
    from docbatch.worker.weights import read_list

    fill = _by(docs, "Job")["docbatch-models-fill"]["spec"]["template"]["spec"]
    (container,) = fill["containers"]
    assert container["command"][:3] == ["docbatch", "models", "fill"]
    worker = _by(docs, "Deployment")["docbatch-worker-entities"]["spec"]["template"]["spec"]
    (worker_c,) = worker["containers"]
    # The settings the workers plan their models from, the Job plans from too.
    configs = [e for e in worker_c["envFrom"] if "configMapRef" in e]
    assert configs and all(e in container["envFrom"] for e in configs)
    env = {e["name"]: e["value"] for e in container["env"]}
    settings = _by(docs, "ConfigMap")["docbatch-settings"]["data"]
    assert env["HF_HOME"] == settings["HF_HOME"] and env["HF_HUB_OFFLINE"] == "0"
    listed = container["command"][container["command"].index("--list") + 1]
    models = _by(docs, "ConfigMap")["docbatch-models-list"]["data"]["models.txt"]
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert listed == f"{mount['list']}/models.txt"
    path = Path(ROOT / "test-artifacts" / "models.txt")
    path.parent.mkdir(exist_ok=True)
    path.write_text(models)
    assert all(m.pinned for m in read_list(path))
    volumes = {v["name"]: v for v in fill["volumes"]}
    worker_mounts = {m["name"]: m["mountPath"] for m in worker_c["volumeMounts"]}
    worker_volumes = {v["name"]: v for v in worker["volumes"]}
    claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
    assert claim == worker_volumes["models"]["persistentVolumeClaim"]["claimName"]
    assert (
        settings["HF_HOME"].startswith(worker_mounts["models"])
        and mount["models"] == (worker_mounts["models"])
    )


@pytest.mark.fast
def test_a_deployment_added_to_the_list_gets_its_own_scaling_and_docbatch_knows_it():
    """One entry in ops/deployments.yaml: its worker Deployment, its KEDA trigger on its
    own queue, and the list every docbatch pod reads (the api validates the model)."""
    spec = yaml.safe_load((ROOT / "ops/deployments.yaml").read_text())
    spec["deployments"].append(
        {
            "name": "large",
            "task": "generate",
            "model": "/models/qwen-7b",
            "worker": {"gpu": 1, "cpu": 8, "memory": "32Gi"},
        }
    )
    files = generate.render(spec)
    workers = [d for d in yaml.safe_load_all(files["base/workers.yaml"]) if d]
    keda = [d for d in yaml.safe_load_all(files["base/keda.yaml"]) if d]
    (dep,) = [
        d
        for d in workers
        if d["metadata"]["name"] == "docbatch-worker-large" and d["kind"] == "Deployment"
    ]
    assert dep["metadata"]["labels"]["docbatch/gpu"] == "true"
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["docbatch", "worker", "--deployment", "large"]
    assert container["resources"]["limits"] == {"cpu": "8", "memory": "64Gi"}
    (so,) = [d for d in keda if d["metadata"]["name"] == "docbatch-worker-large"]
    (trigger,) = so["spec"]["triggers"]
    assert 'queue="docbatch.generate.large"' in trigger["metadata"]["query"]
    # The queue KEDA watches is the one docbatch computes from the same list.
    (configmap,) = [d for d in yaml.safe_load_all(files["base/deployments-configmap.yaml"]) if d]
    listed = configmap["data"]["DOCBATCH_DEPLOYMENTS"]
    settings = Settings(deployments=json.loads(listed), queue_prefix=spec["queue_prefix"])
    assert settings.queue_for("large") == "docbatch.generate.large"
    assert settings.model_for("large").model == "/models/qwen-7b"
    assert "worker" not in listed  # how it runs is the generators' business only
    # A bad entry stops the generator as docbatch would stop at start, naming it.
    spec["deployments"].append({"name": "x", "task": "paint"})
    with pytest.raises(SystemExit, match="unknown task 'paint'"):
        generate.render(spec)


@pytest.mark.fast
def test_every_docbatch_pod_reads_the_fleet_list(rendered):
    deployments = _by(rendered["gpu"], "Deployment")
    jobs = _by(rendered["gpu"], "Job")
    pods = {name: d["spec"]["template"]["spec"] for name, d in deployments.items()}
    pods["docbatch-migrate"] = jobs["docbatch-migrate"]["spec"]["template"]["spec"]
    for name, pod in pods.items():
        for c in pod["containers"]:
            refs = [e.get("configMapRef", {}).get("name") for e in c.get("envFrom", [])]
            if "docbatch-settings" in refs:
                assert "docbatch-deployments" in refs, name
    assert "docbatch-deployments" in _by(rendered["gpu"], "ConfigMap")


@pytest.mark.fast
def test_a_vllm_pool_runs_its_image_with_the_solo_pool(rendered):
    dockerfile = (ROOT / "ops/Dockerfile.vllm").read_text()
    assert "FROM docbatch-worker:${DOCBATCH_VERSION}" in dockerfile
    assert 'pip install "vllm==${VLLM_VERSION}"' in dockerfile
    assert '"--pool", "solo"' in dockerfile and "BACKEND=vllm" in dockerfile
    spec = yaml.safe_load((ROOT / "ops/deployments.yaml").read_text())
    spec["deployments"].append(
        {
            "name": "generate-vllm",
            "task": "generate",
            "backend": "vllm",
            "worker": {"gpu": 0, "image": "docbatch-worker-vllm", "args": ["--pool", "solo"]},
        }
    )
    (dep,) = [
        d
        for d in yaml.safe_load_all(generate.render(spec)["base/workers.yaml"])
        if d and d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-vllm")
    ]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "docbatch-worker-vllm"
    assert c["command"][-2:] == ["--pool", "solo"]
    # The release tag is set for the vLLM image in the one place too.
    base = yaml.safe_load((ROOT / "ops/k8s/base/kustomization.yaml").read_text())
    assert "docbatch-worker-vllm" in {i["name"] for i in base["images"]}
