"""translate on a tiny Marian en->de the tests build: fidelity, paragraphs, missing pairs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from docbatch.schema.settings import ModelConfig
from docbatch.worker.batching import BatchRunner
from docbatch.worker.handlers.language import detect
from docbatch.worker.handlers.translate import SpmOffsets, TranslateHandler, char_of_byte
from tests.fixtures import WorkerProcess, load_corpus, read_ndjson, wait_for_job
from tests.seq2seq_helpers import greedy_env, own_prefix, queue_prefix
from tests.test_handlers_seq2seq import GREEDY, assert_batched_equals_alone, mixed_chunks
from tests.tiny_models import tiny_models  # noqa: F401 - session fixture

FRENCH = (
    "Le renard brun saute par-dessus le chien paresseux. Nous traduisons des documents "
    "en allemand, mais ce modèle n'existe pas ici.\n\nDeuxième paragraphe, toujours en français."
)
GERMAN = "Dieses Dokument ist schon auf Deutsch geschrieben. Es bleibt, wie es ist."


def test_translations_batched_equal_generate_alone(tiny_models):  # noqa: F811
    handler = TranslateHandler(
        ModelConfig(model=tiny_models["marian_template"], generation=GREEDY, batch_tokens=500)
    )
    handler.setup("cpu")
    params = {"target_lang": "de", "source_lang": "en"}
    chunks = mixed_chunks(handler, params)
    assert len(chunks) >= 50
    pm = handler.resolve("en", "de")
    handler.model, handler.prefix = pm.model, ""  # what direct_generate reads
    assert_batched_equals_alone(handler, chunks, params)


def _char_at_loop(text: str) -> list[int]:
    """The byte -> character map as SpmOffsets computed it before (a loop per character)."""
    raw = text.encode("utf-8")
    char_at, pos = [0] * (len(raw) + 1), 0
    for i, ch in enumerate(text):
        for _ in ch.encode("utf-8"):
            char_at[pos] = i
            pos += 1
    char_at[len(raw)] = len(text)
    return char_at


def test_spm_offsets_are_characters_for_any_utf8(tiny_models):  # noqa: F811
    """Marian's chunk offsets: SentencePiece's byte offsets mapped to characters, the same
    for ASCII (taken as they are) and for characters of 2, 3 and 4 bytes."""
    handler = TranslateHandler(ModelConfig(model=tiny_models["marian_template"]))
    handler.setup("cpu")
    offsets = handler.resolve("en", "de").chunk_tokenizer
    assert isinstance(offsets, SpmOffsets)
    texts = ["Plain ASCII: the fox, twice.", FRENCH, "Grüße 😀 aus Zürich — 中文, ok", "é"]
    for text in texts:
        loop = _char_at_loop(text)
        assert char_of_byte(text, len(text.encode("utf-8"))).tolist() == loop
        got = offsets(text)
        pieces = offsets.spm.encode(text, return_type="proto").pieces
        assert got["input_ids"] == [p.id for p in pieces]
        assert got["offset_mapping"] == [(loop[p.begin], loop[p.end]) for p in pieces]
        assert got["offset_mapping"][-1][1] == len(text)


def test_languages_detected_offline():
    assert detect(FRENCH) == "fr"
    assert detect(GERMAN) == "de"
    assert detect(load_corpus("stdlib-docs.jsonl", 1)[0]["text"]) == "en"


@pytest.fixture(scope="module")
def marian_worker(tiny_models) -> Iterator[tuple[WorkerProcess, str]]:  # noqa: F811
    prefix = own_prefix("marian")
    worker = WorkerProcess(
        "translate",
        env={
            "DOCBATCH_QUEUE_PREFIX": prefix,
            "DOCBATCH_MODELS__TRANSLATE__MODEL": tiny_models["marian_template"],
            **greedy_env("translate"),
        },
        name="marian",
    ).wait_ready()
    yield worker, prefix
    worker.stop()


def test_missing_pair_fails_only_its_documents(api, marian_worker, tiny_models):  # noqa: F811
    worker, prefix = marian_worker
    english = load_corpus("stdlib-docs.jsonl", 8)
    docs = [
        *english[:4],
        {"custom_id": "fr-1", "text": FRENCH},
        *english[4:],
        {"custom_id": "de-1", "text": GERMAN},
    ]
    with queue_prefix(prefix):
        task = {"type": "translate", "target_lang": "de"}
        resp = api.post("/v1/jobs", json={"tasks": [task], "documents": docs})
    assert resp.status_code == 202, resp.text
    job = wait_for_job(api, resp.json()["id"])
    assert job["status"] == "completed_with_errors", worker.log[-3000:]
    counts = job["counts"]["translate"]
    assert (counts["succeeded"], counts["failed"]) == (9, 1)

    lines = {
        x["custom_id"]: x["results"]["translate"]
        for x in read_ndjson(api.get(f"/v1/jobs/{job['id']}/results"))
    }
    error = lines["fr-1"]["error"]
    assert "Helsinki-NLP/opus-mt-fr-de" in error and "fr->de" in error
    assert lines["de-1"]["output"]["translation"] == GERMAN
    for doc in english:
        res = lines[doc["custom_id"]]
        out = res["output"]
        assert out["source_lang"] == "en" and out["source_detected"] is True
        assert res["model"]["id"] == tiny_models["marian"]
        assert out["translation"].strip() and out["translation"] != doc["text"]
        # Paragraph breaks survive (line wraps inside a sentence cannot).
        assert out["translation"].count("\n\n") == doc["text"].count("\n\n")
    assert worker.proc.poll() is None, "the worker keeps running"


def test_ctranslate2_backend_matches_transformers(tiny_models):  # noqa: F811
    pytest.importorskip("ctranslate2")
    from tests.tiny_models import convert_ct2

    params = {"target_lang": "de", "source_lang": "en"}
    ours = {}
    for backend, model in (
        ("transformers", tiny_models["marian_template"]),
        ("ctranslate2", convert_ct2(tiny_models["marian"])),
    ):
        handler = TranslateHandler(ModelConfig(model=model, backend=backend, generation=GREEDY))
        handler.setup("cpu")
        docs = load_corpus("stdlib-docs.jsonl", 5)
        chunks = [c for d in docs for c in handler.chunk_for(d["text"], params) if c.text.strip()]
        outs, failures, _ = BatchRunner(handler).run(
            [c.text for c in chunks],
            [c.tokens for c in chunks],
            params,
            lambda: False,
            [c.group for c in chunks],
        )
        assert failures == {}
        ours[backend] = outs
    # Same weights, greedy: the same translation from either backend.
    pairs = list(zip(ours["transformers"], ours["ctranslate2"], strict=True))
    assert all(hf and ct2 == hf for hf, ct2 in pairs), pairs[:3]
