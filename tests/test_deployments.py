"""Named deployments: several models of one task side by side (issue 23).

Configuration (JSON, YAML, the old per-task settings), the queue of each, and through the
real api, Postgres, Redis and two worker processes: one job embedding the same documents
with the bundled all-MiniLM-L6-v2 (the embed task's default deployment) and with a tiny
random BERT (a second embed deployment), results kept apart in NDJSON and Parquet.
"""

from __future__ import annotations

import io
import json
import secrets
import time
from collections.abc import Iterator

import numpy as np
import pytest

from docbatch.processes import free_port
from docbatch.schema.errors import InputError
from docbatch.schema.settings import Settings
from docbatch.schema.validation import validate_tasks
from tests.fixtures import WorkerProcess, read_ndjson, wait_for_job
from tests.seq2seq_helpers import own_prefix
from tests.settings_env import override
from tests.tiny_heads import tiny_heads  # noqa: F401 - session fixture

TWO = [
    {"name": "bert-tiny", "task": "embed", "model": "/models/bert-tiny"},
    {"name": "sentiment", "task": "classify", "model": "/models/sst", "batch_tokens": 2048},
]


@pytest.mark.fast
def test_deployments_from_json_env_beside_each_tasks_default(monkeypatch):
    monkeypatch.setenv("DOCBATCH_DEPLOYMENTS", json.dumps(TWO))
    monkeypatch.setenv("DOCBATCH_QUEUE_PREFIX", "q")
    s = Settings()
    assert [d.name for d in s.deployments_of("embed")] == ["embed", "bert-tiny"]
    assert s.queue_for("embed") == "q.embed"  # the default's queue is unchanged
    assert s.queue_for("bert-tiny") == "q.embed.bert-tiny"
    assert s.queue_for("sentiment") == "q.classify.sentiment"
    assert s.queue_for("extract") == "q.extract"
    assert s.task_of("sentiment") == "classify"
    assert s.model_for("sentiment").batch_tokens == 2048
    # An empty handler is the task's default handler.
    assert s.model_for("bert-tiny").handler == s.model_for("embed").handler


@pytest.mark.fast
def test_deployments_from_a_yaml_file(tmp_path, monkeypatch):
    path = tmp_path / "deployments.yaml"
    path.write_text(
        "deployments:\n"
        "  - name: e5\n    task: embed\n    model: /models/e5\n"
        "  - name: embed\n    task: embed\n    model: /models/default-embedder\n"
    )
    monkeypatch.setenv("DOCBATCH_DEPLOYMENTS_FILE", str(path))
    s = Settings()
    assert s.model_for("e5").model == "/models/e5"
    # A listed deployment named after its task is that task's default.
    assert s.model_for("embed").model == "/models/default-embedder"
    assert s.queue_for("e5") == "docbatch.embed.e5"


@pytest.mark.fast
def test_old_style_per_task_settings_are_the_default_deployment(monkeypatch):
    monkeypatch.setenv("DOCBATCH_MODELS__CLASSIFY__MODEL", "/models/sst")
    monkeypatch.setenv("DOCBATCH_MODELS__CLASSIFY__BATCH_TOKENS", "1024")
    s = Settings()
    default = s.fleet["classify"]
    assert (default.task, default.model, default.batch_tokens) == ("classify", "/models/sst", 1024)
    assert s.queue_for("classify") == "docbatch.classify"
    # A job task naming no model runs on it; its key is the task's name, as before.
    params = validate_tasks([{"type": "classify"}], s)[0]
    assert params["model"] == "classify"


@pytest.mark.fast
@pytest.mark.parametrize(
    ("listed", "says"),
    [
        ([{"name": "x", "task": "paint"}], "unknown task 'paint'"),
        ([{"name": "x", "task": "embed"}, {"name": "x", "task": "tags"}], "listed twice"),
        ([{"name": "tags", "task": "embed"}], "choose another name"),
        ([{"name": "extract", "task": "embed"}], "choose another name"),
        ([{"name": "e5", "task": "embed", "modle": "/models/e5"}], "modle"),
    ],
)
def test_bad_deployment_lists_are_refused_naming_the_problem(listed, says, monkeypatch):
    monkeypatch.setenv("DOCBATCH_DEPLOYMENTS", json.dumps(listed))
    with pytest.raises(ValueError, match=says):
        Settings()


@pytest.mark.fast
def test_a_typo_in_the_deployments_file_is_refused_naming_entry_and_key(tmp_path, monkeypatch):
    from docbatch.schema.config import SettingsError, load_settings

    path = tmp_path / "deployments.yaml"
    path.write_text("deployments:\n  - {name: e5, task: embed, modle: /models/e5}\n")
    monkeypatch.setenv("DOCBATCH_DEPLOYMENTS_FILE", str(path))
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert str(refused.value) == (
        f"DOCBATCH_DEPLOYMENTS_FILE {str(path)!r}: deployments[0] (e5): modle: Extra inputs "
        "are not permitted"
    )


@pytest.mark.fast
def test_a_listed_default_sets_only_the_fields_it_names(tmp_path, monkeypatch):
    path = tmp_path / "deployments.yaml"
    path.write_text(
        "deployments:\n  - {name: classify, task: classify, batch_tokens: 2048, worker: {gpu: 4}}\n"
    )
    monkeypatch.setenv("DOCBATCH_DEPLOYMENTS_FILE", str(path))
    monkeypatch.setenv("DOCBATCH_MODELS__CLASSIFY__MODEL", "/models/sst")
    s = Settings()
    assert (s.model_for("classify").model, s.model_for("classify").batch_tokens) == (
        "/models/sst",
        2048,
    )
    assert s.model_for("classify").handler == Settings().model_for("classify").handler


@pytest.mark.fast
def test_a_task_names_its_deployment_once_and_only_its_own_tasks(monkeypatch):
    monkeypatch.setenv("DOCBATCH_DEPLOYMENTS", json.dumps(TWO))
    s = Settings()
    both = validate_tasks([{"type": "embed"}, {"type": "embed", "model": "bert-tiny"}], s)
    assert [t["model"] for t in both] == ["embed", "bert-tiny"]
    with pytest.raises(InputError) as unknown:
        validate_tasks([{"type": "embed", "model": "sentiment"}], s)
    assert unknown.value.field == "tasks[0].model"
    assert "its deployments: embed, bert-tiny" in str(unknown.value)
    with pytest.raises(InputError, match="model 'bert-tiny' is listed twice"):
        validate_tasks([{"type": "embed", "model": "bert-tiny"}] * 2, s)
    with pytest.raises(InputError, match="task 'embed' is listed twice"):
        validate_tasks(["embed", {"type": "embed", "model": "embed"}], s)


@pytest.mark.fast
def test_cli_model_names_the_deployment_of_the_task_before_it():
    from docbatch.cli import build_parser
    from docbatch.commands.common import task_specs

    args = build_parser().parse_args(
        ["submit", "d.jsonl", "--task", "embed", "--model", "bert-tiny", "--task", "embed"]
    )
    assert task_specs(args) == [{"type": "embed", "model": "bert-tiny"}, {"type": "embed"}]


# -- through the api and real workers --------------------------------------------------------


@pytest.fixture(scope="module")
def two_embedders(tiny_heads) -> Iterator[dict[str, str]]:  # noqa: F811
    """Workers of the default embed deployment (bundled MiniLM) and of ``bert-tiny`` (a
    random BERT); the api in this process sees the same deployments."""
    deployments = [
        {"name": "bert-tiny", "task": "embed", "model": tiny_heads["bert"]},
        # The same model under another name: results are reused across the two.
        {"name": "bert-twin", "task": "embed", "model": tiny_heads["bert"]},
        # Configured, never started: its units must wait, queued, and say why.
        {"name": "idle", "task": "embed", "model": tiny_heads["bert"]},
    ]
    with override(
        queue_prefix=own_prefix("deploy"),
        deployments=json.dumps(deployments),
        torch_threads="1",
    ) as env:
        # bert-tiny's worker serves /metrics: its series carry the deployment's name.
        metrics = {**env, "DOCBATCH_WORKER_METRICS_PORT": str(free_port())}
        workers = [
            WorkerProcess("embed", env=env, name="deploy-embed"),
            WorkerProcess("bert-tiny", env=metrics, name="deploy-bert-tiny", deployment=True),
            WorkerProcess("bert-twin", env=env, name="deploy-bert-twin", deployment=True),
        ]
        try:
            for w in workers:
                w.wait_ready()
            # (DOCBATCH_TEST_*: not a setting, ignored by the processes given this env)
            yield {**env, "DOCBATCH_TEST_METRICS_PORT": metrics["DOCBATCH_WORKER_METRICS_PORT"]}
        finally:
            for w in workers:
                w.stop()


DOCS = [
    {"custom_id": "a", "text": "Open a socket and send bytes to the server."},
    {"custom_id": "b", "text": "The integral of a polynomial is another polynomial."},
    {"custom_id": "c", "text": "Tomatoes grow best in warm, sunny gardens."},
]


def test_two_embed_deployments_in_one_job_give_different_vectors(api, two_embedders):
    import pyarrow.parquet as pq

    from docbatch.schema.settings import get_settings
    from docbatch.worker.handlers.minilm import SentenceEncoderHandler
    from docbatch.worker.model_stage import compute_unit
    from docbatch.worker.registry import load_handler

    resp = api.post(
        "/v1/jobs",
        json={
            "tasks": [{"type": "embed"}, {"type": "embed", "model": "bert-tiny"}],
            "documents": DOCS,
        },
    )
    assert resp.status_code == 202, resp.text
    job = wait_for_job(api, resp.json()["id"], timeout=180)
    assert job["status"] == "completed", job
    assert set(job["counts"]) == {"embed", "bert-tiny"}
    assert job["tasks"]["bert-tiny"] == {
        "type": "embed",
        "include_chunks": True,
        "model": "bert-tiny",
    }
    assert job["counts"]["bert-tiny"]["succeeded"] == len(DOCS)
    assert job["warnings"] == []

    lines = read_ndjson(api.get(f"/v1/jobs/{job['id']}/results"))
    assert [line["custom_id"] for line in lines] == ["a", "b", "c"]
    settings = get_settings()
    for name in ("embed", "bert-tiny"):
        # Each deployment's vectors are its own model's: the same handler, in this process.
        handler = load_handler(name, settings)
        handler.setup("cpu")
        local = compute_unit(
            handler,
            [(i, d["custom_id"], d["text"]) for i, d in enumerate(DOCS)],
            {},
            lambda: False,
            job_id="local",
            unit_id=0,
        ).rows
        for line, row in zip(lines, local, strict=True):
            got = line["results"][name]
            assert got["model"]["id"] == handler.model_id
            expected = np.frombuffer(row["vectors"], dtype=np.float32)[: row["output"]["dim"]]
            assert np.allclose(got["output"]["vector"], expected, atol=1e-5)
    for line in lines:
        a = np.array(line["results"]["embed"]["output"]["vector"])
        b = np.array(line["results"]["bert-tiny"]["output"]["vector"])
        assert a.shape == (384,)  # all-MiniLM-L6-v2
        assert a.shape != b.shape or not np.allclose(a, b)
    assert lines[0]["results"]["embed"]["model"]["id"] == SentenceEncoderHandler.default_model
    assert lines[0]["results"]["bert-tiny"]["model"]["id"] == settings.model_for("bert-tiny").model

    table = pq.read_table(
        io.BytesIO(api.get(f"/v1/jobs/{job['id']}/results?format=parquet").content)
    )
    assert {"embed_vector", "bert-tiny_vector"} <= set(table.column_names)
    parquet_a = table.column("bert-tiny_vector").to_pylist()[0]
    assert np.allclose(parquet_a, lines[0]["results"]["bert-tiny"]["output"]["vector"], atol=1e-6)

    # The worker's own series are labelled with the deployment it serves.
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    port = two_embedders["DOCBATCH_TEST_METRICS_PORT"]
    written = [
        (s.labels, s.value)
        for family in text_string_to_metric_families(
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        )
        for s in family.samples
        if s.name == "docbatch_worker_documents_total"
    ]
    assert written and all(labels["model"] == "bert-tiny" for labels, _ in written)
    assert sum(v for labels, v in written if labels["status"] == "succeeded") >= len(DOCS)


def test_unknown_model_is_a_422_listing_the_tasks_deployments(api, two_embedders):
    before = api.get("/v1/jobs").json()["count"]
    resp = api.post(
        "/v1/jobs",
        json={"tasks": [{"type": "embed", "model": "nope"}], "documents": DOCS},
    )
    assert resp.status_code == 422, resp.text
    assert "tasks[0].model" in resp.text
    assert "embed, bert-tiny, bert-twin, idle" in resp.text
    assert api.get("/v1/jobs").json()["count"] == before


def test_a_deployment_with_no_worker_leaves_its_units_queued_and_says_so(api, two_embedders):
    resp = api.post(
        "/v1/jobs", json={"tasks": [{"type": "embed", "model": "idle"}], "documents": DOCS}
    )
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    assert any("no worker serves deployment idle" in w for w in resp.json()["warnings"])
    job = api.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "queued"
    assert job["counts"]["idle"]["pending"] == len(DOCS)
    assert job["warnings"] == [
        "no worker serves deployment idle: its units stay queued until one starts "
        "(docbatch worker --deployment idle)"
    ]
    # Served deployments are not named.
    assert not any("bert-tiny" in w or "deployment embed" in w for w in job["warnings"])
    # The api's metrics show the waiting deployment by name: its backlog and its oldest
    # unit's age (what the no-worker alert and KEDA read), with the `model` label.
    from prometheus_client.parser import text_string_to_metric_families

    from docbatch.schema.settings import get_settings

    queue = get_settings().queue_for("idle")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(api.get("/metrics").text)
        for s in family.samples
    }
    assert samples[("docbatch_queued_units", (("queue", queue),))] >= 1
    age = ("docbatch_oldest_queued_unit_age_seconds", (("model", "idle"), ("task", "embed")))
    assert samples[age] >= 0
    depth = (("model", "idle"), ("queue", queue), ("task", "embed"))
    assert ("docbatch_queue_depth", depth) in samples
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    assert wait_for_job(api, job_id, timeout=60)["status"] == "cancelled"


def test_reuse_is_keyed_by_the_model_actually_used(api, two_embedders):
    """A job on bert-twin reuses what bert-tiny computed (the same model, revision and
    params under another name); the default embed deployment (another model) does not."""
    marker = secrets.token_hex(4)
    docs = [{"custom_id": d["custom_id"], "text": f"{d['text']} ({marker})"} for d in DOCS]

    def run(model: str, reuse: bool) -> dict:
        task = {"type": "embed", "model": model}
        body = {"tasks": [task], "documents": docs, "reuse_results": reuse}
        resp = api.post("/v1/jobs", json=body)
        assert resp.status_code == 202, resp.text
        job = wait_for_job(api, resp.json()["id"], timeout=180)
        assert job["status"] == "completed", job
        lines = read_ndjson(api.get(f"/v1/jobs/{job['id']}/results"))
        return {
            "job": job,
            "vectors": [line["results"][model]["output"]["vector"] for line in lines],
        }

    first = run("bert-tiny", False)
    twin = run("bert-twin", True)
    assert twin["job"]["counts"]["bert-twin"]["reused"] == len(docs)
    assert twin["vectors"] == first["vectors"]
    other = run("embed", True)
    assert other["job"]["counts"]["embed"]["reused"] == 0


def _local_vectors(name: str, texts: list[str]) -> list[np.ndarray]:
    """What deployment ``name``'s handler gives for ``texts`` in this process."""
    from docbatch.schema.settings import get_settings
    from docbatch.worker.model_stage import compute_unit
    from docbatch.worker.registry import load_handler

    handler = load_handler(name, get_settings())
    handler.setup("cpu")
    rows = compute_unit(
        handler,
        [(i, f"t{i}", text) for i, text in enumerate(texts)],
        {},
        lambda: False,
        job_id="local",
        unit_id=0,
    ).rows
    return [np.frombuffer(r["vectors"], dtype=np.float32)[: r["output"]["dim"]] for r in rows]


@pytest.fixture(scope="module")
def aliased_api(two_embedders) -> Iterator[str]:
    """An api process whose DOCBATCH_OPENAI_MODELS map two OpenAI-style names."""
    from tests.procs import ApiProcess

    aliases = {"text-embedding-3-small": "bert-tiny", "minilm": "embed"}
    with override(openai_models=json.dumps(aliases)) as extra:
        proc = ApiProcess({**two_embedders, **extra}).wait_ready()
    try:
        yield proc.url
    finally:
        proc.stop()


def _openai(url: str):  # noqa: ANN202 - openai is imported lazily
    import openai

    from tests.fixtures import new_api_key

    return openai.OpenAI(base_url=f"{url}/v1", api_key=new_api_key("default"), max_retries=0)


def _run_batch(client, lines: list[dict], endpoint: str = "/v1/embeddings"):  # noqa: ANN001, ANN202
    from docbatch.schema.settings import get_settings
    from docbatch.worker.batches import tick

    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    f = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint=endpoint, completion_window="24h")
    deadline = time.monotonic() + 180
    while (b := client.batches.retrieve(b.id)).status not in TERMINAL:
        assert time.monotonic() < deadline, b
        time.sleep(0.5)
        tick(get_settings())  # the beat's batch tick: finalizes it once its job ends
    return b


def test_openai_models_and_a_batch_naming_a_deployment(aliased_api):
    """The official client lists and reads the deployments and aliases, and a batch whose
    lines name an alias of ``bert-tiny`` runs on that deployment's worker."""
    import openai

    from docbatch.schema.settings import get_settings

    client = _openai(aliased_api)
    listed = {m.id: m for m in client.models.list()}
    assert {"embed", "bert-tiny", "bert-twin", "idle", "summarize"} <= set(listed)
    assert {"text-embedding-3-small", "minilm"} <= set(listed)
    assert all(m.object == "model" and m.owned_by == "docbatch" for m in listed.values())
    alias = client.models.retrieve("text-embedding-3-small")
    assert alias.id == "text-embedding-3-small"
    assert (alias.model_extra or {})["deployment"] == "bert-tiny"
    assert (alias.model_extra or {})["task"] == "embed"
    own = client.models.retrieve("bert-tiny")
    assert (own.model_extra or {})["model"] == get_settings().model_for("bert-tiny").model
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nope")

    lines = [
        {
            "custom_id": d["custom_id"],
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": d["text"]},
        }
        for d in DOCS
    ]
    b = _run_batch(client, lines)
    assert b.status == "completed" and b.request_counts.completed == len(DOCS), b
    out = [json.loads(x) for x in client.files.content(b.output_file_id).text.splitlines()]
    got = {o["custom_id"]: o["response"]["body"] for o in out}
    assert {body["model"] for body in got.values()} == {"text-embedding-3-small"}
    expected = _local_vectors("bert-tiny", [d["text"] for d in DOCS])
    for d, vector in zip(DOCS, expected, strict=True):
        assert np.allclose(got[d["custom_id"]]["data"][0]["embedding"], vector, atol=1e-5)


def test_one_batch_whose_lines_name_different_models(aliased_api, api):
    """Lines of one /v1/embeddings batch name different embed deployments (by alias and
    by name), as OpenAI allows: each line runs on its own deployment's worker, the output
    file keeps the input order, each body names the model its line did and holds that
    model's vectors; an unknown model is that line's error only."""
    client = _openai(aliased_api)
    texts = [d["text"] for d in DOCS]
    requests = [  # (custom_id, model named, input, deployment that must run it)
        ("a", "text-embedding-3-small", texts[0], "bert-tiny"),
        ("b", "minilm", texts[1], "embed"),
        ("c", "bert-tiny", [texts[2], texts[0]], "bert-tiny"),
        ("d", "embed", texts[2], "embed"),
        ("e", "nope", texts[0], None),
        ("f", "minilm", [texts[0], texts[1]], "embed"),
    ]
    lines = [
        {
            "custom_id": cid,
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": model, "input": given},
        }
        for cid, model, given, _ in requests
    ]
    b = _run_batch(client, lines)
    assert b.status == "completed", b
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (
        6,
        5,
        1,
    )
    assert b.model == "text-embedding-3-small"  # the first line's
    out = [json.loads(x) for x in client.files.content(b.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in out] == ["a", "b", "c", "d", "f"]  # the input order
    local = {
        name: dict(zip(texts, _local_vectors(name, texts), strict=True))
        for name in ("embed", "bert-tiny")
    }
    for o, (cid, model, given, deployment) in zip(
        out, [r for r in requests if r[3] is not None], strict=True
    ):
        body = o["response"]["body"]
        assert (o["custom_id"], body["model"]) == (cid, model)
        inputs = [given] if isinstance(given, str) else given
        assert [e["index"] for e in body["data"]] == list(range(len(inputs)))
        for item, text in zip(body["data"], inputs, strict=True):
            vector = np.array(item["embedding"])
            assert deployment is not None
            assert vector.shape == local[deployment][text].shape
            assert np.allclose(vector, local[deployment][text], atol=1e-5), (cid, deployment)
    # The two models' vectors of one text differ: a line ran on the model it named.
    a, b_ = out[0]["response"]["body"], out[3]["response"]["body"]
    assert len(a["data"][0]["embedding"]) != len(b_["data"][0]["embedding"])
    [error] = [json.loads(x) for x in client.files.content(b.error_file_id).text.splitlines()]
    assert error["custom_id"] == "e"
    assert error["response"]["body"]["error"]["code"] == "model_not_found"

    # Behind it, one job with a task per deployment, each counting its own documents.
    job = api.get(f"/v1/jobs/{b.model_extra['docbatch_job_id']}").json()
    assert {k: (c["total"], c["succeeded"]) for k, c in job["counts"].items()} == {
        "bert-tiny": (3, 3),
        "embed": (4, 4),
    }
    assert job["tasks"]["embed"]["model"] == "embed"
    assert b.usage.input_tokens == sum(c["tokens"] for c in job["counts"].values()) > 0


TERMINAL = {"completed", "failed", "expired", "cancelled"}


def test_moderations_on_a_classify_deployment_score_as_the_head(tiny_heads, database):  # noqa: F811
    """/v1/moderations lines on a classify deployment (a multi-label head whose labels are
    the categories): category_scores are the head's scores, categories and flagged follow
    DOCBATCH_OPENAI_MODERATION_THRESHOLD."""
    import openai

    from docbatch.schema.settings import get_settings
    from docbatch.worker.batches import tick
    from docbatch.worker.model_stage import compute_unit
    from docbatch.worker.registry import load_handler
    from tests.fixtures import new_api_key
    from tests.procs import ApiProcess

    deployments = [{"name": "moderator", "task": "classify", "model": tiny_heads["multi"]}]
    with override(
        queue_prefix=own_prefix("moderate"),
        deployments=json.dumps(deployments),
        openai_models=json.dumps({"omni-moderation-latest": "moderator"}),
        openai_moderation_threshold="0.5",
        torch_threads="1",
    ) as env:
        worker = WorkerProcess("moderator", env=env, name="moderator", deployment=True)
        proc = ApiProcess(env).wait_ready()
        try:
            worker.wait_ready()
            client = openai.OpenAI(
                base_url=f"{proc.url}/v1", api_key=new_api_key("default"), max_retries=0
            )
            lines = [
                {
                    "custom_id": "one",
                    "method": "POST",
                    "url": "/v1/moderations",
                    "body": {"model": "omni-moderation-latest", "input": DOCS[0]["text"]},
                },
                {
                    "custom_id": "two",
                    "method": "POST",
                    "url": "/v1/moderations",
                    "body": {
                        "model": "omni-moderation-latest",
                        "input": [DOCS[1]["text"], DOCS[2]["text"]],
                    },
                },
            ]
            data = "".join(json.dumps(x) + "\n" for x in lines).encode()
            f = client.files.create(file=("mod.jsonl", io.BytesIO(data)), purpose="batch")
            b = client.batches.create(
                input_file_id=f.id, endpoint="/v1/moderations", completion_window="24h"
            )
            deadline = time.monotonic() + 180
            while (b := client.batches.retrieve(b.id)).status not in TERMINAL:
                assert time.monotonic() < deadline, (b, worker.log[-2000:])
                time.sleep(0.5)
                tick(get_settings())  # the beat's batch tick
            assert b.status == "completed" and b.request_counts.completed == 2, b
            text = client.files.content(b.output_file_id).text
            got = {x["custom_id"]: x["response"]["body"] for x in map(json.loads, text.split())}
            results = got["one"]["results"] + got["two"]["results"]
            assert got["one"]["model"] == "omni-moderation-latest"

            handler = load_handler("moderator", get_settings())
            handler.setup("cpu")
            rows = compute_unit(
                handler,
                [(i, d["custom_id"], d["text"]) for i, d in enumerate(DOCS)],
                {},
                lambda: False,
                job_id="local",
                unit_id=0,
            ).rows
            for result, row in zip(results, rows, strict=True):
                head = {s["label"]: s["score"] for s in row["output"]["scores"]}
                assert set(result["category_scores"]) == {"sports", "politics", "tech"}
                for label, score in head.items():
                    assert result["category_scores"][label] == pytest.approx(score, abs=1e-6)
                    assert result["categories"][label] == (score >= 0.5)
                assert result["flagged"] == any(s >= 0.5 for s in head.values())
        finally:
            proc.stop()
            worker.stop()
