"""`docbatch models plan|fill|check`: the hub models the workers load, pinned by revision,
into the cache they read offline.

The hub itself cannot be reached from a test machine, so the fill test serves tiny real
models from a stand-in hub on 127.0.0.1 (tests/fake_hub.py) under the default ids and
revisions; the real huggingface_hub client downloads them, and then the real workers
(`docbatch run`, HF_HUB_OFFLINE=1, the stand-in stopped) load them from that cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from docbatch.schema.settings import ModelConfig, Settings
from docbatch.worker.handlers.ask import AskHandler
from docbatch.worker.handlers.classify import ClassifyHandler
from docbatch.worker.handlers.entities import EntitiesHandler
from docbatch.worker.handlers.generate import GenerateHandler
from docbatch.worker.registry import load_handler
from docbatch.worker.weights import HubModel, plan, read_list
from tests.fake_hub import FakeHub, commit_for
from tests.fixtures import ROOT
from tests.tiny_causal import tiny_gpt2  # noqa: F401 - session fixture
from tests.tiny_heads import tiny_heads  # noqa: F401 - session fixture

HUB_TASKS = {
    "classify": ClassifyHandler,
    "entities": EntitiesHandler,
    "ask": AskHandler,
    "generate": GenerateHandler,
}


@pytest.mark.fast
def test_the_plan_is_every_hub_model_the_workers_load_pinned():
    settings = Settings()
    planned = {(m.repo_id, m.revision): m.used_by for m in plan(settings)}
    expected = {
        (cls.default_model, cls.default_revision): (task,) for task, cls in HUB_TASKS.items()
    }
    # embed, tags and extractive summarize run on the MiniLM inside the install.
    assert planned == expected
    assert all(HubModel(repo, rev).pinned for repo, rev in planned)
    # What is planned is what each worker records on its results.
    for task in HUB_TASKS:
        assert load_handler(task, settings).result_model({}) in planned


@pytest.mark.fast
def test_the_plan_follows_the_configured_models(tmp_path):
    local = tmp_path / "ner"
    local.mkdir()
    settings = Settings(
        models={
            "entities": ModelConfig(model=str(local)),  # a folder: nothing to fetch
            "classify": ModelConfig(
                params={"nli_model": "facebook/bart-large-mnli", "nli_revision": "d7645e1"}
            ),
            "summarize": ModelConfig(model="sshleifer/distilbart-cnn-12-6", revision="a4f8f3e"),
            "translate": ModelConfig(fallback_model="facebook/nllb-200-distilled-600M"),
        },
        deployments=[
            {"name": "qwen7", "task": "generate", "model": "Qwen/Qwen2.5-7B-Instruct"},
        ],
    )
    listed = tmp_path / "models.txt"
    listed.write_text("# extras\norg/extra 1a2b3c4  # vetted\n\n")
    models = plan(settings, pairs=[("en", "de")], extra=read_list(listed))
    got = {(m.repo_id, m.revision): m.used_by for m in models}
    assert not any(repo == EntitiesHandler.default_model for repo, _ in got)
    assert got[("facebook/bart-large-mnli", "d7645e1")] == ("classify",)
    assert got[("sshleifer/distilbart-cnn-12-6", "a4f8f3e")] == ("summarize",)
    assert got[("Helsinki-NLP/opus-mt-en-de", "main")] == ("translate",)
    assert got[("facebook/nllb-200-distilled-600M", "main")] == ("translate",)
    assert got[("Qwen/Qwen2.5-7B-Instruct", "main")] == ("qwen7",)
    assert got[("org/extra", "1a2b3c4")] == ("listed",)
    # A branch is not a pin: `plan` says so, and the deployment records "main".
    assert not HubModel("Qwen/Qwen2.5-7B-Instruct", "main").pinned


def _cli(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "docbatch.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _repo(src: str, dest: Path) -> Path:
    """A hub repository as the real ones look: the weights in several formats besides
    the safetensors a worker reads (the fill leaves them on the hub)."""
    shutil.copytree(src, dest)
    (dest / "pytorch_model.bin").write_bytes(b"a pickle the workers never read")
    (dest / "tf_model.h5").write_bytes(b"TensorFlow weights")
    (dest / "onnx").mkdir()
    (dest / "onnx" / "model.onnx").write_bytes(b"ONNX weights")
    return dest


def test_fill_puts_each_pinned_model_where_the_workers_read_it_offline(
    tmp_path,
    tiny_heads,  # noqa: F811
    tiny_gpt2,  # noqa: F811
):
    sources = {"classify": tiny_heads["sst"], "entities": tiny_heads["ner"]}
    sources |= {"ask": tiny_heads["qa"], "generate": tiny_gpt2}
    repos = {
        (cls.default_model, cls.default_revision): _repo(sources[task], tmp_path / "hub" / task)
        for task, cls in HUB_TASKS.items()
    }
    hub = FakeHub(repos).start()
    hf_home = tmp_path / "models" / "hf"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DOCBATCH_", "HF_"))}
    online = {**base, "HF_HOME": str(hf_home), "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
    offline = {**base, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    try:
        # Nothing there yet: check names every missing model and fails.
        missing = _cli("models", "check", env=offline)
        assert missing.returncode == 1, missing.stderr
        for task, cls in HUB_TASKS.items():
            assert f"{cls.default_model}@{cls.default_revision} (used by {task})" in missing.stderr

        filled = _cli("models", "fill", env=online)
        assert filled.returncode == 0, filled.stderr[-3000:]
        # A revision the hub does not have fails, naming it; the rest were still filled.
        bad = _cli("models", "fill", "--model", "org/absent@0badc0de", env=online)
        assert bad.returncode == 1
        assert "org/absent@0badc0de (used by listed): download failed" in bad.stderr
    finally:
        hub.stop()

    # The layout: huggingface_hub's cache, the revision resolving to its commit.
    for (repo, revision), _src in repos.items():
        store = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
        commit = commit_for(revision)
        if revision != commit:
            assert (store / "refs" / revision).read_text() == commit
        snapshot = store / "snapshots" / commit
        assert (snapshot / "config.json").exists() and (snapshot / "model.safetensors").exists()
        assert not (snapshot / "pytorch_model.bin").exists()  # safetensors are enough
        assert not (snapshot / "tf_model.h5").exists() and not (snapshot / "onnx").exists()
        assert f"filled {repo}@{revision} -> {snapshot}" in filled.stdout

    checked = _cli("models", "check", "--format", "json", env=offline)
    assert checked.returncode == 0, checked.stderr
    rows = {r["model"]: r for r in json.loads(checked.stdout)}
    assert {r["commit"] for r in rows.values()} == {commit_for(rev) for _, rev in repos}

    # The workers, offline with the stand-in hub gone, load every default from the volume
    # and record the pinned revision on each result.
    docs = tmp_path / "docs.jsonl"
    texts = ["Ada Lovelace wrote to Charles Babbage in London.", "The meeting is on Monday."]
    lines = (json.dumps({"custom_id": f"d{i}", "text": t}) for i, t in enumerate(texts))
    docs.write_text("".join(f"{line}\n" for line in lines))
    out = tmp_path / "out.jsonl"
    run = _cli(
        "run", str(docs),
        "--task", "classify", "--task", "entities",
        "--task", "ask", "--question", "Who wrote?",
        "--task", "generate",
        "-o", str(out), "--workdir", str(tmp_path / "work"), "--quiet",
        env={**offline, "DOCBATCH_MODELS__GENERATE__GENERATION__MAX_NEW_TOKENS": "4"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    results = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(results) == 2
    for line in results:
        for task, cls in HUB_TASKS.items():
            result = line["results"][task]
            assert result["status"] == "succeeded", result
            assert result["model"] == {"id": cls.default_model, "revision": cls.default_revision}
