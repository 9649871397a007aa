"""classify, entities, ask: fidelity to transformers on tiny random heads, long documents,
and bad models/params failing documents with the setting to change.

Every handler runs through the worker's real path without the database
(``docbatch.worker.runner.compute_unit``: chunking, token-budget batches, reduce), and is compared
with a direct call on each text alone.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch

from docbatch.schema.settings import ModelConfig
from docbatch.worker.handlers.ask import AskHandler
from docbatch.worker.handlers.classify import ClassifyHandler
from docbatch.worker.handlers.entities import EntitiesHandler
from docbatch.worker.handlers.heads import HeadHandler
from docbatch.worker.model_stage import compute_unit
from tests.fixtures import load_corpus
from tests.tiny_heads import tiny_heads  # noqa: F401 - session fixture

QUESTIONS = ["What does the function return?", "Which module is it in?", "When is it raised?"]


def run(handler: HeadHandler, texts: list[str], params: dict[str, Any]) -> list[dict[str, Any]]:
    """Result rows of one unit holding ``texts``, in document order."""
    docs = [(i, f"d{i}", t) for i, t in enumerate(texts)]
    out = compute_unit(handler, docs, params, lambda: False, job_id="j", unit_id=1)
    rows = {r["document_id"]: r for r in out.rows}
    return [rows[i] for i in range(len(texts))]


def short_docs(n: int = 8) -> list[str]:
    """Mixed lengths (so batches pad), each well inside one chunk."""
    docs = load_corpus("stdlib-docs.jsonl", n)
    return [d["text"][: 120 + 45 * i] for i, d in enumerate(docs)]


def long_doc() -> str:
    return "\n\n".join(d["text"] for d in load_corpus("stdlib-docs.jsonl", 12))


def handler(cls: type[HeadHandler], path: str, **kw: Any) -> Any:
    h = cls(ModelConfig(model=path, **kw))
    h.setup("cpu")
    assert not h.load_error, h.load_error
    return h


# -- classify ---------------------------------------------------------------------------
@pytest.mark.fast
@pytest.mark.parametrize("head", ["sst", "multi"])
def test_classify_equals_the_model_on_each_text_alone(tiny_heads, head):  # noqa: F811
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    h = handler(ClassifyHandler, tiny_heads[head])
    texts = short_docs()
    rows = run(h, texts, {"type": "classify"})
    model = AutoModelForSequenceClassification.from_pretrained(tiny_heads[head]).eval()
    tok = AutoTokenizer.from_pretrained(tiny_heads[head])
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    spread = []
    for text, row in zip(texts, rows, strict=True):
        assert row["status"] == "succeeded", row["error"]
        out = row["output"]
        assert out["chunks"] == 1 and out["source"] == "model"
        with torch.inference_mode():
            logits = model(**tok(text, return_tensors="pt")).logits[0].float()
        direct = logits.sigmoid() if head == "multi" else logits.softmax(-1)
        got = {s["label"]: s["score"] for s in out["scores"]}
        np.testing.assert_allclose([got[n] for n in names], direct.numpy(), atol=1e-5)
        assert out["label"] == names[int(direct.argmax())]
        assert out["multi_label"] is (head == "multi")
        spread.append(direct.numpy())
    # The random head's scores depend on the text (else the comparison proves little).
    assert np.ptp(np.stack(spread), axis=0).max() > 0.05
    if head == "multi":  # sigmoid scores need not sum to 1
        assert any(abs(sum(s["score"] for s in r["output"]["scores"]) - 1) > 0.01 for r in rows)


@pytest.mark.fast
def test_classify_long_document_mean_max_and_chunk_scores(tiny_heads):  # noqa: F811
    h = handler(ClassifyHandler, tiny_heads["sst"], max_input_tokens=64)
    text = long_doc()
    mean = run(h, [text], {"type": "classify", "chunk_scores": True})[0]["output"]
    best = run(h, [text], {"type": "classify", "aggregate": "max"})[0]["output"]
    per_chunk = mean["chunk_scores"]
    assert mean["chunks"] == len(per_chunk) > 5
    # Chunks cover the document in order, and each chunk's scores are its own text's.
    assert per_chunk[0]["start"] == 0 and per_chunk[-1]["end"] == len(text)
    solo = run(h, [text[c["start"] : c["end"]] for c in per_chunk[:3]], {"type": "classify"})
    for c, r in zip(per_chunk, solo, strict=False):
        got = {s["label"]: s["score"] for s in r["output"]["scores"]}
        for label, score in c["scores"].items():
            assert abs(got[label] - score) < 1e-5
    w = np.array([c["tokens"] for c in per_chunk], dtype=float)
    for s in mean["scores"]:
        col = np.array([c["scores"][s["label"]] for c in per_chunk])
        assert abs(s["score"] - float((col * w).sum() / w.sum())) < 1e-5
    for s in best["scores"]:
        assert abs(s["score"] - max(c["scores"][s["label"]] for c in per_chunk)) < 1e-6


@pytest.mark.fast
def test_classify_own_label_subset_and_zero_shot_with_nli(tiny_heads):  # noqa: F811
    texts = short_docs(3)
    plain = handler(ClassifyHandler, tiny_heads["sst"])
    only = run(plain, texts, {"type": "classify", "labels": ["POSITIVE"]})
    full = run(plain, texts, {"type": "classify"})
    for o, f in zip(only, full, strict=True):
        pos = [s for s in f["output"]["scores"] if s["label"] == "POSITIVE"]
        assert o["output"]["scores"] == pos

    labels = ["networking", "file system", "text processing"]
    h = handler(ClassifyHandler, tiny_heads["sst"], params={"nli_model": tiny_heads["nli"]})
    template = "The topic is {}."
    rows = run(h, texts, {"type": "classify", "labels": labels, "hypothesis_template": template})
    nli = h.nli
    assert nli is not None
    for text, row in zip(texts, rows, strict=True):
        out = row["output"]
        assert out["source"] == "zero-shot" and row["model_id"] == tiny_heads["nli"]
        assert row["params"]["hypothesis_template"] == template
        # The zero-shot pipeline's rule (multi_label=False): softmax of entailment logits.
        entail = []
        for label in labels:
            enc = nli.tokenizer(text, template.format(label), return_tensors="pt")
            with torch.inference_mode():
                entail.append(float(nli.model(**enc).logits[0, 2]))
        direct = torch.tensor(entail).softmax(-1).numpy()
        got = {s["label"]: s["score"] for s in out["scores"]}
        np.testing.assert_allclose([got[label] for label in labels], direct, atol=1e-5)
        assert abs(sum(got.values()) - 1) < 1e-5


@pytest.mark.fast
@pytest.mark.parametrize("template", ["{:>999999999}{}", "{0.__class__} {}", "{} {x}", "{!r}"])
def test_a_template_with_another_field_fails_its_documents_in_the_worker(tiny_heads, template):  # noqa: F811
    """Issue 20 item 16: the api refuses these (422); a unit that still carries one (an old
    row, another path) fails its documents naming the template before any str.format of
    it, so "{:>999999999}{}" never allocates a gigabyte in the worker."""
    h = handler(ClassifyHandler, tiny_heads["sst"], params={"nli_model": tiny_heads["nli"]})
    params = {"type": "classify", "labels": ["networking"], "hypothesis_template": template}
    for row in run(h, short_docs(2), params):
        assert row["status"] == "failed", row
        assert "hypothesis template" in row["error"] and "exactly once" in row["error"]


# -- entities ---------------------------------------------------------------------------
@pytest.mark.fast
@pytest.mark.parametrize("strategy", ["simple", "first", "average", "max"])
def test_entities_equal_the_token_classification_pipeline(tiny_heads, strategy):  # noqa: F811
    from transformers import pipeline

    h = handler(EntitiesHandler, tiny_heads["ner"])
    texts = short_docs()
    rows = run(h, texts, {"type": "entities", "aggregation": strategy})
    pipe = pipeline("token-classification", model=tiny_heads["ner"], aggregation_strategy=strategy)
    total = 0
    for text, row in zip(texts, rows, strict=True):
        assert row["status"] == "succeeded", row["error"]
        got = row["output"]["entities"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = pipe(text)
        assert [(e["label"], e["start"], e["end"]) for e in got] == [
            (w["entity_group"], w["start"], w["end"]) for w in want
        ]
        np.testing.assert_allclose(
            [e["score"] for e in got], [float(w["score"]) for w in want], atol=1e-5
        )
        for e in got:
            assert text[e["start"] : e["end"]] == e["text"]
        total += len(got)
        # The grouped view counts every entity once under its label.
        grouped = row["output"]["groups"]
        assert sum(x["count"] for g in grouped.values() for x in g) == len(got)
    assert total > 10


@pytest.mark.fast
def test_entities_in_a_long_document_are_whole_and_in_document_offsets(tiny_heads):  # noqa: F811
    from transformers import pipeline

    h = handler(EntitiesHandler, tiny_heads["ner"], max_input_tokens=48, params={"stride": 16})
    text = long_doc()
    chunks = h.chunk_for(text, {})
    assert len(chunks) > 10
    assert all(b.start < a.end for a, b in zip(chunks, chunks[1:], strict=False))  # overlap
    out = run(h, [text], {"type": "entities", "aggregation": "first"})[0]["output"]
    ents = out["entities"]
    assert len(ents) > 20 and out["chunks"] == len(chunks)
    for e in ents:
        assert text[e["start"] : e["end"]] == e["text"]
    starts = [e["start"] for e in ents]
    assert starts == sorted(starts)
    assert all(a["end"] <= b["start"] for a, b in zip(ents, ents[1:], strict=False))
    # Each entity is what the model finds in one window scored alone, and lies inside it
    # (not against a cut edge): no chunk boundary split it.
    pipe = pipeline("token-classification", model=tiny_heads["ner"], aggregation_strategy="first")
    seen = []
    for c in chunks:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = pipe(c.text)
        seen.append({(w["entity_group"], w["start"] + c.start, w["end"] + c.start) for w in found})
    checked = 0
    for e in ents:
        homes = [k for k, s in enumerate(seen) if (e["label"], e["start"], e["end"]) in s]
        assert homes, e
        if len(h.tokenizer(e["text"], add_special_tokens=False)["input_ids"]) >= 16:
            continue  # longer than the overlap: no window holds it whole
        checked += 1
        assert any(
            (k == 0 or e["start"] > chunks[k].start)
            and (k == len(chunks) - 1 or e["end"] < chunks[k].end)
            for k in homes
        ), e
    assert checked > 20


# -- ask --------------------------------------------------------------------------------
def qa_reference(path: str) -> Any:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from tests.reference.qa_pipeline_5_2 import QuestionAnsweringPipeline

    model = AutoModelForQuestionAnswering.from_pretrained(path).eval()
    return QuestionAnsweringPipeline(model=model, tokenizer=AutoTokenizer.from_pretrained(path))


@pytest.mark.fast
def test_ask_equals_the_question_answering_pipeline(tiny_heads):  # noqa: F811
    h = handler(AskHandler, tiny_heads["qa"])
    texts = short_docs()
    rows = run(h, texts, {"type": "ask", "questions": QUESTIONS})
    ref = qa_reference(tiny_heads["qa"])
    for text, row in zip(texts, rows, strict=True):
        assert row["status"] == "succeeded", row["error"]
        answers = row["output"]["answers"]
        assert [a["question"] for a in answers] == QUESTIONS
        for a in answers:
            want = ref(question=a["question"], context=text)
            assert (a["start"], a["end"], a["text"]) == (want["start"], want["end"], want["answer"])
            assert abs(a["score"] - want["score"]) < 1e-5
            assert text[a["start"] : a["end"]] == a["text"]


def test_ask_long_document_best_span_and_threshold(tiny_heads):  # noqa: F811
    h = handler(AskHandler, tiny_heads["qa"], params={"max_seq_len": 64, "doc_stride": 16})
    text = long_doc()
    params = {"type": "ask", "questions": QUESTIONS[:2]}
    chunks = h.chunk_for(text, params)
    assert len(chunks) > 10
    out = run(h, [text], params)[0]["output"]
    ref = qa_reference(tiny_heads["qa"])
    for a in out["answers"]:
        assert text[a["start"] : a["end"]] == a["text"] and a["text"]
        # The best span over all windows: at least as good as every window's own best.
        window_best = max(
            ref(question=a["question"], context=c.text, max_seq_len=64)["score"] for c in chunks
        )
        assert a["score"] >= window_best - 1e-6
    high = max(a["score"] for a in out["answers"]) + 0.01
    nulls = run(h, [text], {**params, "min_score": min(1.0, high)})[0]["output"]["answers"]
    assert all(a["text"] is None and a["start"] is None for a in nulls)
    assert [a["score"] for a in nulls] == [a["score"] for a in out["answers"]]


# -- bad models and params --------------------------------------------------------------
@pytest.mark.fast
@pytest.mark.parametrize(
    ("cls", "wrong"),
    [(ClassifyHandler, "ner"), (EntitiesHandler, "qa"), (AskHandler, "bert"), (AskHandler, None)],
)
def test_wrong_or_missing_model_fails_documents_naming_the_setting(
    tiny_heads,  # noqa: F811
    cls,
    wrong,
    tmp_path,
):
    path = tiny_heads[wrong] if wrong else str(tmp_path / "not-downloaded")
    h = cls(ModelConfig(model=path))
    h.setup("cpu")  # never raises: the worker must stay up
    params: dict[str, Any] = {"type": cls.task}
    if cls is AskHandler:
        params["questions"] = QUESTIONS
    rows = run(h, short_docs(2), params)
    for row in rows:
        assert row["status"] == "failed"
        assert f"DOCBATCH_MODELS__{cls.task.upper()}__MODEL" in row["error"], row["error"]
        assert path in row["error"]
    if wrong:
        assert cls.arch_suffix in rows[0]["error"]


@pytest.mark.fast
def test_hub_default_without_a_download_names_the_setting():
    h = ClassifyHandler(ModelConfig())
    h.setup("cpu")
    row = run(h, ["a short text"], {"type": "classify"})[0]
    assert row["status"] == "failed"
    assert "distilbert-base-uncased-finetuned-sst-2-english" in row["error"]
    assert "DOCBATCH_MODELS__CLASSIFY__MODEL" in row["error"]


@pytest.mark.fast
def test_labels_the_model_lacks_without_nli_fail_naming_the_setting(tiny_heads):  # noqa: F811
    h = handler(ClassifyHandler, tiny_heads["sst"])
    rows = run(h, short_docs(2), {"type": "classify", "labels": ["sports", "POSITIVE"]})
    for row in rows:
        assert row["status"] == "failed"
        assert "nli_model" in row["error"] and "DOCBATCH_MODELS__CLASSIFY__PARAMS" in row["error"]
        assert "NEGATIVE" in row["error"]  # says which labels the model has


@pytest.mark.fast
def test_questions_that_leave_no_room_for_context_fail_naming_the_setting(tiny_heads):  # noqa: F811
    h = handler(AskHandler, tiny_heads["qa"], params={"max_seq_len": 64})
    question = "Which " + " ".join(["very"] * 60) + " long question is this?"
    rows = run(h, short_docs(2), {"type": "ask", "questions": [question]})
    for row in rows:
        assert row["status"] == "failed"
        assert "max_seq_len" in row["error"] and "DOCBATCH_MODELS__ASK__PARAMS" in row["error"]
