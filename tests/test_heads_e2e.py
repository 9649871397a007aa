"""classify, entities and ask through the real api, Postgres, Redis and worker processes,
bad parameters at submission, and `docbatch run --task classify --task entities`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from tests.fixtures import CORPUS, ROOT, WorkerProcess, load_corpus, read_ndjson, wait_for_job
from tests.seq2seq_helpers import own_prefix, queue_prefix
from tests.test_heads import QUESTIONS, long_doc, short_docs
from tests.tiny_heads import tiny_heads  # noqa: F401 - session fixture

BAD_TASKS = [
    ({"type": "ask", "questions": []}, "tasks[0].questions"),
    ({"type": "ask", "questions": ["  "]}, "tasks[0].questions[0]"),
    ({"type": "ask"}, "tasks[0].questions"),
    ({"type": "ask", "questions": ["q?"] * 33}, "DOCBATCH_MAX_QUESTIONS_PER_TASK"),
    ({"type": "ask", "questions": ["q?"], "min_score": 2}, "tasks[0].min_score"),
    ({"type": "classify", "labels": []}, "tasks[0].labels"),
    ({"type": "classify", "labels": ["a"], "hypothesis_template": "about"}, "hypothesis_template"),
    # Issue 20 item 16: one bare {} and no other field; labels and questions have a length.
    ({"type": "classify", "labels": ["a"], "hypothesis_template": "{:>999999999}{}"}, "exactly"),
    ({"type": "classify", "labels": ["a"], "hypothesis_template": "{0.__class__}{}"}, "exactly"),
    ({"type": "classify", "labels": ["a"], "hypothesis_template": "is {} }"}, "literal brace"),
    ({"type": "classify", "labels": ["x" * 501]}, "DOCBATCH_MAX_LABEL_CHARS"),
    ({"type": "tags", "labels": ["ok", "x" * 501]}, "label 1 is 501 characters"),
    ({"type": "ask", "questions": ["q" * 2001]}, "DOCBATCH_MAX_QUESTION_CHARS"),
    ({"type": "classify", "aggregate": "median"}, "tasks[0].aggregate"),
    ({"type": "entities", "aggregation": "none"}, "tasks[0].aggregation"),
]


@pytest.mark.parametrize(("task", "named"), BAD_TASKS)
def test_bad_task_params_are_a_422_naming_the_field(api, task, named):
    before = api.get("/v1/jobs").json()["count"]
    resp = api.post(
        "/v1/jobs", json={"tasks": [task], "documents": [{"custom_id": "a", "text": "x"}]}
    )
    assert resp.status_code == 422, resp.text
    assert named in resp.text
    assert api.get("/v1/jobs").json()["count"] == before  # nothing half-written


@pytest.fixture(scope="module")
def head_workers(tiny_heads) -> Iterator[tuple[dict[str, WorkerProcess], str]]:  # noqa: F811
    prefix = own_prefix("heads")
    env = {
        "DOCBATCH_QUEUE_PREFIX": prefix,
        "DOCBATCH_MODELS__CLASSIFY__MODEL": tiny_heads["sst"],
        "DOCBATCH_MODELS__ENTITIES__MODEL": tiny_heads["ner"],
        "DOCBATCH_MODELS__ASK__MODEL": tiny_heads["qa"],
        "DOCBATCH_MODELS__ASK__PARAMS": json.dumps({"max_seq_len": 96, "doc_stride": 32}),
        "DOCBATCH_TORCH_THREADS": "1",
    }
    workers = {
        t: WorkerProcess(t, env=env, name=f"heads-{t}") for t in ("classify", "entities", "ask")
    }
    try:
        for w in workers.values():
            w.wait_ready()
        yield workers, prefix
    finally:
        for w in workers.values():
            w.stop()


def test_classify_entities_ask_through_api_and_workers(api, head_workers, tiny_heads):  # noqa: F811
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    workers, prefix = head_workers
    texts = short_docs(5)
    long_text = long_doc()
    docs = [{"custom_id": f"s{i}", "text": t} for i, t in enumerate(texts)]
    docs.append({"custom_id": "long", "text": long_text})
    tasks = [
        {"type": "classify"},
        {"type": "entities", "aggregation": "average"},
        {"type": "ask", "questions": QUESTIONS[:2], "min_score": 0.0},
    ]
    with queue_prefix(prefix):
        resp = api.post("/v1/jobs", json={"tasks": tasks, "documents": docs})
    assert resp.status_code == 202, resp.text
    job = wait_for_job(api, resp.json()["id"], timeout=600)
    logs = "\n".join(w.log[-1500:] for w in workers.values())
    assert job["status"] == "completed", logs
    for task in ("classify", "entities", "ask"):
        assert job["counts"][task]["succeeded"] == len(docs)

    lines = {
        x["custom_id"]: x["results"] for x in read_ndjson(api.get(f"/v1/jobs/{job['id']}/results"))
    }
    model = AutoModelForSequenceClassification.from_pretrained(tiny_heads["sst"]).eval()
    tok = AutoTokenizer.from_pretrained(tiny_heads["sst"])
    for i, text in enumerate(texts):
        res = lines[f"s{i}"]
        assert res["classify"]["model"]["id"] == tiny_heads["sst"]
        with torch.inference_mode():
            direct = model(**tok(text, return_tensors="pt")).logits[0].softmax(-1).numpy()
        got = {s["label"]: s["score"] for s in res["classify"]["output"]["scores"]}
        np.testing.assert_allclose([got["NEGATIVE"], got["POSITIVE"]], direct, atol=1e-5)
    for cid, res in lines.items():
        text = long_text if cid == "long" else texts[int(cid[1:])]
        for e in res["entities"]["output"]["entities"]:
            assert text[e["start"] : e["end"]] == e["text"]
        answers = res["ask"]["output"]["answers"]
        assert [a["question"] for a in answers] == QUESTIONS[:2]
        for a in answers:
            assert text[a["start"] : a["end"]] == a["text"]
        assert res["ask"]["params"]["max_seq_len"] == 96
    assert lines["long"]["classify"]["output"]["chunks"] > 1
    assert lines["long"]["ask"]["output"]["chunks"] > 1
    assert lines["long"]["entities"]["output"]["chunks"] > 1

    # Labels the model does not have, and no NLI model: each document fails, saying what to set.
    with queue_prefix(prefix):
        bad = api.post(
            "/v1/jobs",
            json={"tasks": [{"type": "classify", "labels": ["sports"]}], "documents": docs[:2]},
        )
    assert bad.status_code == 202, bad.text
    job = wait_for_job(api, bad.json()["id"])
    assert job["status"] == "failed"
    errors = read_ndjson(api.get(f"/v1/jobs/{job['id']}/errors"))
    assert len(errors) == 2
    assert all("DOCBATCH_MODELS__CLASSIFY__PARAMS" in json.dumps(e) for e in errors)
    assert all(w.proc.poll() is None for w in workers.values())


def test_worker_with_a_model_of_the_wrong_head_stays_up_and_fails_documents(api, tiny_heads):  # noqa: F811
    prefix = own_prefix("wrong-head")
    worker = WorkerProcess(
        "entities",
        env={
            "DOCBATCH_QUEUE_PREFIX": prefix,
            "DOCBATCH_MODELS__ENTITIES__MODEL": tiny_heads["qa"],
            "DOCBATCH_TORCH_THREADS": "1",
        },
        name="wrong-head",
    ).wait_ready()
    try:
        with queue_prefix(prefix):
            resp = api.post(
                "/v1/jobs",
                json={"tasks": ["entities"], "documents": load_corpus("stdlib-docs.jsonl", 3)},
            )
        job = wait_for_job(api, resp.json()["id"])
        assert job["status"] == "failed" and job["counts"]["entities"]["failed"] == 3
        errors = read_ndjson(api.get(f"/v1/jobs/{job['id']}/errors"))
        text = json.dumps(errors)
        assert "DOCBATCH_MODELS__ENTITIES__MODEL" in text and "ForTokenClassification" in text
        assert worker.proc.poll() is None
    finally:
        worker.stop()


def test_docbatch_run_classify_and_entities_with_configured_models(tmp_path, tiny_heads):  # noqa: F811
    subset = tmp_path / "docs.jsonl"
    subset.write_text(
        "".join((CORPUS / "stdlib-docs.jsonl").read_text().splitlines(keepends=True)[:6])
    )
    out = tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCBATCH_")}
    env["DOCBATCH_MODELS__CLASSIFY__MODEL"] = tiny_heads["sst"]
    env["DOCBATCH_MODELS__ENTITIES__MODEL"] = tiny_heads["ner"]
    env["DOCBATCH_TORCH_THREADS"] = "1"
    cmd = [sys.executable, "-m", "docbatch.cli", "run", str(subset), "--task", "classify"]
    cmd += ["--task", "entities", "-o", str(out), "--workdir", str(tmp_path / "work"), "--quiet"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "completed: 6 documents" in proc.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 6
    for line in lines:
        res = line["results"]
        assert res["classify"]["output"]["label"] in ("NEGATIVE", "POSITIVE")
        assert res["classify"]["model"]["id"] == tiny_heads["sst"]
        assert "groups" in res["entities"]["output"]
