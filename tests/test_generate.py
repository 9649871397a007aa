"""generate on a tiny GPT-2 the tests build: fidelity, stop strings, seeds, chat, map-reduce,
bad parameters, the vLLM mapping, and a job through the real api and a worker process.

Fidelity: what the system returns for a prompt (length-sorted, left-padded token-budget
batches of mixed prompt lengths) equals ``model.generate`` on that prompt alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from docbatch.schema.errors import ModelUnavailable, PermanentError
from docbatch.schema.settings import GenerationConfig, ModelConfig
from docbatch.worker.batching import BatchRunner, plan_batches
from docbatch.worker.handlers.causal_lm import Sampling
from docbatch.worker.handlers.generate import GenerateHandler
from docbatch.worker.handlers.prompts import build_prompt, render_template
from docbatch.worker.model_stage import compute_unit
from tests.fixtures import WorkerProcess, load_corpus, read_ndjson, wait_for_job
from tests.seq2seq_helpers import own_prefix, queue_prefix
from tests.tiny_causal import tiny_gpt2  # noqa: F401 - session fixture

TEMPLATE = "Text: {text}\nSummary:"
NEW = 12


def make_handler(path: str, **config: Any) -> GenerateHandler:
    config.setdefault("generation", GenerationConfig(max_new_tokens=NEW))
    handler = GenerateHandler(ModelConfig(model=path, **config))
    handler.setup("cpu")
    assert handler.unavailable is None, handler.unavailable
    return handler


@pytest.fixture(scope="module")
def handler(tiny_gpt2: str) -> GenerateHandler:  # noqa: F811
    return make_handler(tiny_gpt2, batch_tokens=600)


@pytest.fixture(scope="module")
def reference(tiny_gpt2: str) -> Any:  # noqa: F811
    """Plain transformers, loaded on its own: the yardstick."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval(), AutoTokenizer.from_pretrained(
        tiny_gpt2
    )


def alone(reference: Any, prompt: str, new: int = NEW, add_special_tokens: bool = True) -> str:
    model, tok = reference
    enc = tok(prompt, return_tensors="pt", add_special_tokens=add_special_tokens)
    with torch.inference_mode():
        ids = model.generate(
            **enc, do_sample=False, max_new_tokens=new, pad_token_id=tok.eos_token_id
        )
    return str(tok.decode(ids[0][enc["input_ids"].shape[1] :], skip_special_tokens=True))


def short_docs(n: int) -> list[dict[str, Any]]:
    return load_corpus("stdlib-docs.jsonl", n)


def prompts_of(handler: GenerateHandler, docs: list[dict[str, Any]], params: dict) -> list:
    return [c for d in docs for c in handler.chunk_for(d["text"], params)]


def run_batched(handler: GenerateHandler, chunks: list, params: dict) -> list:
    outputs, failures, _ = BatchRunner(handler).run(
        [c.text for c in chunks], [c.tokens for c in chunks], params, lambda: False
    )
    assert failures == {}
    return outputs


# -- fidelity -----------------------------------------------------------------------------
def test_greedy_batched_equals_generate_alone(handler, reference):
    params = {"type": "generate", "template": TEMPLATE}
    chunks = prompts_of(handler, short_docs(40), params)
    lengths = [c.tokens for c in chunks]
    batches = plan_batches(lengths, handler.batch_budget, handler.config.max_batch_rows)
    # The point is left padding: several multi-row batches of unequal prompt lengths.
    assert sum(1 for b in batches if len({lengths[i] for i in b}) > 1) >= 3, batches
    assert min(lengths) < 60 < max(lengths)
    ours = run_batched(handler, chunks, params)
    theirs = [alone(reference, c.text) for c in chunks]
    pairs = enumerate(zip(ours, theirs, strict=True))
    mismatched = [(i, o.text, t) for i, (o, t) in pairs if o.text != t]
    assert mismatched == [], mismatched[:3]
    # The output depends on the prompt (random weights that ignore it would pass trivially).
    assert len({o.text for o in ours}) >= 0.8 * len(ours)
    for o, c in zip(ours, chunks, strict=True):
        assert o.prompt_tokens == c.tokens
        assert o.finish_reason == "length" and o.completion_tokens == NEW


def test_position_ids_matter_for_left_padding(handler, reference):
    """Without position ids from the mask, left padding shifts positions and outputs change:
    the fidelity test above would catch a backend that forgot them."""
    model, tok = reference
    short, long = "Text: x\nSummary:", "Text: " + "word " * 40 + "\nSummary:"
    s = Sampling(max_new_tokens=NEW)
    ids = [list(tok(short)["input_ids"]), list(tok(long)["input_ids"])]
    width = len(ids[1])
    assert len(ids[0]) < width
    padded = torch.tensor([[tok.eos_token_id] * (width - len(ids[0])) + ids[0], ids[1]])
    mask = torch.tensor([[0] * (width - len(ids[0])) + [1] * len(ids[0]), [1] * width])
    with torch.inference_mode():
        naive = model.generate(
            input_ids=padded,
            attention_mask=mask,
            position_ids=torch.arange(width).expand(2, width),
            do_sample=False,
            max_new_tokens=NEW,
            pad_token_id=tok.eos_token_id,
        )
    naive_short = tok.decode(naive[0][width:], skip_special_tokens=True)
    ours = handler.model.generate(ids, s)
    assert ours[0].text == alone(reference, short)
    assert naive_short != ours[0].text


def test_stop_strings_cut_the_text(handler, reference):
    doc = short_docs(1)[0]
    params = {"type": "generate", "template": TEMPLATE}
    prompt = handler.chunk_for(doc["text"], params)[0].text
    full = alone(reference, prompt)
    # A stop string that first appears in the middle of the unconstrained output.
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    cut = full[: full.find(stop)]
    stopped_params = {**params, "stop": [stop, "never-generated-zz"]}
    others = prompts_of(handler, short_docs(6)[1:], stopped_params)
    chunks = [handler.chunk_for(doc["text"], stopped_params)[0], *others]
    outs = run_batched(handler, chunks, stopped_params)
    assert outs[0].text == cut
    assert outs[0].finish_reason == "stop"
    assert outs[0].completion_tokens < NEW
    for c, o in zip(chunks[1:], outs[1:], strict=True):  # the neighbours are cut the same way
        ref = alone(reference, c.text)
        assert o.text == (ref[: ref.find(stop)] if stop in ref else ref)


def test_seed_reproduces_a_sample_whatever_the_batch(handler, reference):
    docs = short_docs(12)
    params = {"type": "generate", "template": TEMPLATE, "temperature": 1.5, "seed": 7}
    target = handler.chunk_for(docs[0]["text"], params)[0]
    alone_out = run_batched(handler, [target], params)[0].text
    in_batch = run_batched(handler, [*prompts_of(handler, docs[1:], params), target], params)
    assert in_batch[-1].text == alone_out
    again = run_batched(handler, [target], params)[0].text
    assert again == alone_out
    other_seed = run_batched(handler, [target], {**params, "seed": 8})[0].text
    assert other_seed != alone_out
    assert alone_out != alone(reference, target.text)  # it did sample
    recorded = handler.describe_params(params)["sampling"]
    assert recorded == {
        "max_new_tokens": NEW,
        "do_sample": True,
        "temperature": 1.5,
        "top_p": 1.0,
        "top_k": 0,
        "stop": [],
        "seed": 7,
    }
    greedy = handler.describe_params({"type": "generate", "max_new_tokens": 5})["sampling"]
    assert greedy == {"max_new_tokens": 5, "do_sample": False, "stop": []}


# -- prompts ------------------------------------------------------------------------------
def test_few_shot_template_and_chat_messages(handler, reference):
    examples = [{"text": "alpha", "output": " A"}, {"text": "beta", "output": " B"}]
    params = {"type": "generate", "template": "In: {text}\nOut:", "examples": examples}
    prompt = handler.chunk_for("gamma", params)[0].text
    assert prompt == "In: alpha\nOut: A\n\nIn: beta\nOut: B\n\nIn: gamma\nOut:"
    assert prompt == render_template("In: {text}\nOut:", "gamma", examples)
    tok = handler.tokenizer
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Name a module."}]},
    ]
    import json

    chunk = handler.chunk_for(json.dumps(messages), {"type": "generate", "input": "messages"})[0]
    flat = [{"role": m["role"], "content": "Name a module."} for m in messages]
    flat[0]["content"] = "Be brief."
    expected = tok.apply_chat_template(flat, tokenize=False, add_generation_prompt=True)
    assert chunk.text == expected and chunk.text.endswith("<|im_start|>assistant\n")
    # Token ids as the chat template gives them: no special tokens added twice.
    ids = tok.apply_chat_template(flat, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert chunk.tokens == len(ids)
    out = handler.predict([chunk.text], {"type": "generate", "input": "messages"})[0]
    assert out.text == alone(reference, expected, add_special_tokens=False)
    chat = build_prompt("gamma", {"chat": True, "system": "Be brief."}, tok)
    assert not chat.special_tokens and "<|im_start|>user\ngamma<|im_end|>" in chat.text


def test_bad_messages_fail_the_document(handler):
    docs = [(1, "ok", '[{"role": "user", "content": "hi"}]'), (2, "bad", "not json")]
    outcome = compute_unit(
        handler,
        docs,
        {"type": "generate", "input": "messages"},
        lambda: False,
        job_id="j",
        unit_id=1,
    )
    by_doc = {r["document_id"]: r for r in outcome.rows}
    assert by_doc[1]["status"] == "succeeded"
    assert by_doc[2]["status"] == "failed" and "not JSON" in by_doc[2]["error"]


# -- long documents -----------------------------------------------------------------------
def test_long_document_map_reduce_and_truncate_false(handler, reference):
    text = load_corpus("licenses.jsonl", 1)[0]["text"]
    params = {
        "type": "generate",
        "template": TEMPLATE,
        "reduce_template": "Notes: {text}\nIn short:",
    }
    outcome = compute_unit(
        handler, [(1, "lic", text)], params, lambda: False, job_id="j", unit_id=1
    )
    (row,) = outcome.rows
    assert row["status"] == "succeeded", row["error"]
    out = row["output"]
    spans = out["chunks"]
    assert len(spans) > 5
    assert "".join(text[s:e] for s, e, _ in spans) == text  # every character in some prompt
    assert len(out["outputs"]) == len(spans)
    assert out["rounds"] >= 1 and out["text"] and out["finish_reason"] in ("stop", "length")
    u = out["usage"]
    assert u["prompt_tokens"] > sum(n for _, _, n in spans)  # the map prompts plus reduce ones
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    # The map outputs are what each piece's prompt gives alone.
    chunks = handler.chunk_for(text, params)
    assert out["outputs"][0]["text"] == alone(reference, chunks[0].text)
    assert row["params"]["reduce_template"] == params["reduce_template"]
    assert row["params"]["template"] == TEMPLATE
    # The worker's tokens_out counter counts every generated token, reduce calls included.
    from prometheus_client import REGISTRY

    from docbatch.worker import metrics

    def tokens_out() -> float:
        return (
            REGISTRY.get_sample_value(
                "docbatch_worker_tokens_out_total", {"task": "generate", "model": "generate"}
            )
            or 0.0
        )

    before = tokens_out()
    metrics.unit_written(handler, "done", outcome.rows, outcome.chunks, outcome.tokens)
    assert tokens_out() - before == u["completion_tokens"]

    strict = {**params, "truncate": False}
    outcome = compute_unit(
        handler,
        [(1, "lic", text), (2, "short", "A short one.")],
        strict,
        lambda: False,
        job_id="j",
        unit_id=1,
    )
    by_doc = {r["document_id"]: r for r in outcome.rows}
    assert by_doc[2]["status"] == "succeeded"
    assert by_doc[1]["status"] == "failed"
    assert "truncate=true" in by_doc[1]["error"] and "tokens" in by_doc[1]["error"]


# -- bad parameters -----------------------------------------------------------------------
def test_max_new_tokens_over_the_context_fails_documents_naming_the_setting(handler):
    docs = [(1, "a", "one"), (2, "b", "two")]
    outcome = compute_unit(
        handler,
        docs,
        {"type": "generate", "max_new_tokens": 500},
        lambda: False,
        job_id="j",
        unit_id=1,
    )
    assert [r["status"] for r in outcome.rows] == ["failed", "failed"]
    assert "DOCBATCH_MODELS__GENERATE__GENERATION__MAX_NEW_TOKENS" in outcome.rows[0]["error"]
    long_template = {"type": "generate", "template": "word " * 200 + "{text}"}
    outcome = compute_unit(handler, docs, long_template, lambda: False, job_id="j", unit_id=1)
    assert all("shorten the template" in r["error"] for r in outcome.rows)


def test_wrong_architecture_fails_documents_not_the_worker(tmp_path: Path):
    from tests.tiny_models import build_bart

    bart = build_bart(tmp_path / "bart")
    handler = GenerateHandler(ModelConfig(model=str(bart)))
    handler.setup("cpu")  # does not raise: the worker stays up
    assert isinstance(handler.unavailable, ModelUnavailable)
    outcome = compute_unit(
        handler, [(1, "a", "text")], {"type": "generate"}, lambda: False, job_id="j", unit_id=1
    )
    (row,) = outcome.rows
    assert row["status"] == "failed"
    assert "BartForConditionalGeneration" in row["error"]
    assert "DOCBATCH_MODELS__GENERATE__MODEL" in row["error"]
    missing = GenerateHandler(ModelConfig(model=str(tmp_path / "nothing-here")))
    missing.setup("cpu")
    with pytest.raises(PermanentError, match="DOCBATCH_MODELS__GENERATE__MODEL"):
        missing.check_params({"type": "generate"})


@pytest.mark.parametrize(
    ("task", "field", "words"),
    [
        ({"template": "no slot here"}, "tasks[0].template", "{text}"),
        ({"reduce_template": "nothing"}, "tasks[0].reduce_template", "{text}"),
        ({"max_new_tokens": 100_000}, "tasks[0].max_new_tokens", "DOCBATCH_MAX_NEW_TOKENS"),
        ({"input": "prompt", "template": "{text}"}, "tasks[0]", "input 'text' only"),
        ({"do_sample": True, "temperature": 0}, "tasks[0]", "greedy"),
        ({"top_p": 0}, "tasks[0].top_p", "greater than 0"),
        ({"stop": [""]}, "tasks[0].stop[0]", "non-empty"),
        ({"type": "generat"}, "tasks[0].type", "known tasks: ask, classify, embed, entities"),
    ],
)
def test_bad_params_are_a_4xx_naming_the_field(api, task, field, words):
    body = {"tasks": [{"type": "generate", **task}], "documents": [{"custom_id": "a", "text": "x"}]}
    resp = api.post("/v1/jobs", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field
    assert words in resp.json()["error"]["message"]


# -- vLLM (parameter mapping and prompt assembly; the engine needs CUDA) ----------------
@pytest.mark.fast
def test_vllm_sampling_params_mapping():
    from docbatch.worker.handlers.vllm_engine import (
        completion_from,
        engine_prompts,
        sampling_kwargs,
    )

    greedy = sampling_kwargs(Sampling(max_new_tokens=20, stop=("\n\n",)))
    assert greedy == {
        "n": 1,
        "max_tokens": 20,
        "min_tokens": 0,
        "stop": ["\n\n"],
        "skip_special_tokens": True,
        "temperature": 0.0,
    }
    sampled = sampling_kwargs(
        Sampling(max_new_tokens=5, do_sample=True, temperature=0.7, top_p=0.9, top_k=40, seed=3)
    )
    assert sampled == {
        "n": 1,
        "max_tokens": 5,
        "min_tokens": 0,
        "stop": None,
        "skip_special_tokens": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 40,
        "seed": 3,
    }
    assert engine_prompts([[1, 2], [3]]) == [
        {"prompt_token_ids": [1, 2]},
        {"prompt_token_ids": [3]},
    ]
    # A RequestOutput's shape (vllm/outputs.py), as the engine returns it.
    done = SimpleNamespace(
        prompt_token_ids=[1, 2, 3],
        outputs=[SimpleNamespace(text="hi", token_ids=[9, 9], finish_reason="length")],
    )
    c = completion_from(done)
    assert (c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) == ("hi", "length", 3, 2)
    aborted = SimpleNamespace(
        prompt_token_ids=[1],
        outputs=[SimpleNamespace(text="", token_ids=[], finish_reason="abort")],
    )
    with pytest.raises(PermanentError, match="abort"):
        completion_from(aborted)


def test_vllm_backend_on_cpu_fails_documents_with_the_setting(tiny_gpt2):  # noqa: F811
    handler = GenerateHandler(ModelConfig(model=tiny_gpt2, backend="vllm"))
    handler.setup("cpu")
    assert handler.unavailable is not None
    assert "DOCBATCH_MODELS__GENERATE__BACKEND=transformers" in str(handler.unavailable)
    # The runner hands the engine a whole unit (it batches continuously), not budget batches.
    lengths = [100] * 600 + [7, 900]
    one = plan_batches(lengths, handler.batch_budget, handler.config.max_batch_rows)
    assert len(one) == 1
    hf = GenerateHandler(ModelConfig(model=tiny_gpt2))
    assert len(plan_batches(lengths, hf.batch_budget, hf.config.max_batch_rows)) > 1


def test_vllm_engine_matches_transformers(tiny_gpt2):  # noqa: F811
    if not torch.cuda.is_available():
        pytest.skip("vLLM's engine needs a CUDA GPU; bench/gpu.py --generate runs it there")
    pytest.importorskip(
        "vllm", reason="vllm is not installed (it pins another torch/transformers than ours)"
    )
    params = {"type": "generate", "template": TEMPLATE}
    fp32 = {"dtype": "float32", "generation": GenerationConfig(max_new_tokens=NEW)}
    hf = make_handler(tiny_gpt2, device="cuda", **fp32)
    vl = GenerateHandler(ModelConfig(model=tiny_gpt2, backend="vllm", **fp32))
    vl.setup("cuda")
    prompts = [c.text for c in prompts_of(hf, short_docs(4), params)]
    assert [c.text for c in vl.predict(prompts, params)] == [
        c.text for c in hf.predict(prompts, params)
    ]


# -- through the api and a worker process -------------------------------------------------
@pytest.fixture(scope="module")
def gpt2_worker(tiny_gpt2) -> Iterator[tuple[WorkerProcess, str]]:  # noqa: F811
    prefix = own_prefix("gpt2")
    worker = WorkerProcess(
        "generate",
        env={
            "DOCBATCH_QUEUE_PREFIX": prefix,
            "DOCBATCH_MODELS__GENERATE__MODEL": tiny_gpt2,
            "DOCBATCH_MODELS__GENERATE__GENERATION__MAX_NEW_TOKENS": str(NEW),
        },
        name="gpt2",
    ).wait_ready()
    yield worker, prefix
    worker.stop()


def test_generate_through_the_api_and_a_worker(api, gpt2_worker, reference):
    worker, prefix = gpt2_worker
    docs = short_docs(10) + load_corpus("licenses.jsonl", 1)
    task = {"type": "generate", "template": TEMPLATE, "reduce_template": "Notes: {text}\nIn short:"}
    strict = {"type": "generate", "template": TEMPLATE, "truncate": False, "stop": ["."]}
    with queue_prefix(prefix):
        job = api.post("/v1/jobs", json={"tasks": [task], "documents": docs}).json()
        strict_docs = [{"custom_id": d["custom_id"], "text": d["text"][:120]} for d in docs[:5]]
        strict_docs.append(docs[-1])
        strict_job = api.post("/v1/jobs", json={"tasks": [strict], "documents": strict_docs}).json()
    assert wait_for_job(api, job["id"])["status"] == "completed", worker.log[-3000:]
    lines = read_ndjson(api.get(f"/v1/jobs/{job['id']}/results"))
    assert [x["custom_id"] for x in lines] == [d["custom_id"] for d in docs]
    pieces = 0
    for line, doc in zip(lines[:-1], docs[:-1], strict=True):
        res = line["results"]["generate"]
        out = res["output"]
        # Each piece's prompt, generated alone, is what the worker's batches gave for it.
        expected = [
            alone(reference, render_template(TEMPLATE, doc["text"][s:e]))
            for s, e, _ in out["chunks"]
        ]
        got = [o["text"] for o in out["outputs"]] if len(expected) > 1 else [out["text"]]
        assert got == expected
        pieces += len(expected)
        assert out["usage"]["completion_tokens"] >= NEW
        assert res["params"]["sampling"] == {"max_new_tokens": NEW, "do_sample": False, "stop": []}
        assert res["params"]["template"] == TEMPLATE
    assert pieces > 10
    long_one = lines[-1]["results"]["generate"]["output"]
    assert len(long_one["chunks"]) > 5 and long_one["rounds"] >= 1

    done = wait_for_job(api, strict_job["id"])
    assert done["status"] == "completed_with_errors"
    assert done["counts"]["generate"]["failed"] == 1, done
    assert done["counts"]["generate"]["succeeded"] == 5
    (error,) = read_ndjson(api.get(f"/v1/jobs/{strict_job['id']}/errors"))
    assert error["custom_id"] == docs[-1]["custom_id"]
    assert "truncate=true" in str(error)
    for line in read_ndjson(api.get(f"/v1/jobs/{strict_job['id']}/results"))[:-1]:
        out = line["results"]["generate"]["output"]
        assert "." not in out["text"]


def test_checkpoint_sampling_defaults_are_not_applied(tiny_gpt2, reference, tmp_path):  # noqa: F811
    """A checkpoint's generation_config.json (do_sample, a repetition penalty) does not
    change the output: only the job's and the registry's settings, which are recorded."""
    import shutil

    from transformers import GenerationConfig as HFGenerationConfig

    path = tmp_path / "gpt2-sampling-defaults"
    shutil.copytree(tiny_gpt2, path)
    HFGenerationConfig(
        do_sample=True, temperature=3.0, top_k=5, repetition_penalty=3.0, eos_token_id=0
    ).save_pretrained(path)
    handler = make_handler(str(path))
    params = {"type": "generate", "template": TEMPLATE}
    chunks = prompts_of(handler, short_docs(3), params)
    outs = handler.predict([c.text for c in chunks], params)
    assert [o.text for o in outs] == [alone(reference, c.text) for c in chunks]


def test_chat_completion_body_maps_to_a_generate_task(handler, reference):
    import json

    from docbatch.domain.openai.convert import Converted, LineError, convert_line
    from docbatch.schema.settings import Settings

    settings = Settings(openai_models={"any": "generate"})

    def convert(body: dict) -> Converted | LineError:
        return convert_line({"url": "/v1/chat/completions", "body": body}, "generate", settings)

    body = {
        "model": "any",
        "messages": [{"role": "user", "content": "Name a module."}],
        "max_tokens": 6,
        "temperature": 0,
        "stop": "\n",
    }
    got = convert(body)
    assert isinstance(got, Converted)
    params, [text] = got.params, got.texts
    assert params["input"] == "messages" and params["stop"] == ["\n"]
    chunk = handler.chunk_for(text, params)[0]
    (out,) = handler.predict([chunk.text], params)
    expected = reference[1].apply_chat_template(
        json.loads(text), tokenize=False, add_generation_prompt=True
    )
    full = alone(reference, expected, new=6, add_special_tokens=False)
    assert out.text == full.split("\n")[0]
    assert out.completion_tokens <= 6 and out.prompt_tokens == chunk.tokens
    # OpenAI samples at temperature 1 unless told otherwise.
    sampled = convert({"model": "any", "messages": body["messages"]})
    assert isinstance(sampled, Converted) and handler.sampling(sampled.params).do_sample
    bad = convert({**body, "n": 2})
    assert isinstance(bad, LineError) and bad.param == "n"


def test_chat_completions_batch_through_the_openai_client(gpt2_worker, reference):
    """/v1/chat/completions lines run on the generate worker; the output file holds
    OpenAI chat.completion bodies equal to the model generating each prompt alone."""
    import io
    import json
    import time

    import openai

    from docbatch.schema.settings import get_settings
    from docbatch.worker.batches import tick
    from tests.fixtures import new_api_key
    from tests.procs import ApiProcess

    worker, prefix = gpt2_worker
    proc = ApiProcess(
        {"DOCBATCH_QUEUE_PREFIX": prefix, "DOCBATCH_OPENAI_MODELS": '{"tiny-gpt2": "generate"}'}
    ).wait_ready()
    try:
        client = openai.OpenAI(
            base_url=f"{proc.url}/v1", api_key=new_api_key("chat"), max_retries=0
        )
        docs = short_docs(4)
        lines = [
            {
                "custom_id": d["custom_id"],
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "tiny-gpt2",
                    "messages": [{"role": "user", "content": d["text"][:200]}],
                    "max_tokens": 8,
                    "temperature": 0,
                },
            }
            for d in docs
        ]
        lines.append(
            {
                **lines[0],
                "custom_id": "other-model",
                "body": {**lines[0]["body"], "model": "gpt-4o"},
            }
        )
        data = "".join(json.dumps(x) + "\n" for x in lines).encode()
        f = client.files.create(file=("chat.jsonl", io.BytesIO(data)), purpose="batch")
        batch = client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + 240
        while batch.status not in ("completed", "failed", "cancelled", "expired"):
            assert time.monotonic() < deadline, (batch, worker.log[-2000:])
            time.sleep(0.5)
            tick(get_settings())  # the beat's batch tick: finalizes it once its job ends
            batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed", batch
        counts = batch.request_counts
        assert (counts.total, counts.completed, counts.failed) == (5, 4, 1)
        out = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
        _, tok = reference
        for line in out:
            body = line["response"]["body"]
            assert body["object"] == "chat.completion" and body["model"] == "tiny-gpt2"
            [choice] = body["choices"]
            assert choice["message"]["role"] == "assistant"
            assert choice["finish_reason"] in ("stop", "length")
            messages = next(x for x in lines if x["custom_id"] == line["custom_id"])["body"][
                "messages"
            ]
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            assert choice["message"]["content"] == alone(
                reference, prompt, new=8, add_special_tokens=False
            )
            usage = body["usage"]
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
        [error] = [
            json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()
        ]
        assert error["custom_id"] == "other-model"
        assert error["response"]["body"]["error"]["code"] == "model_not_found"
    finally:
        proc.stop()


def test_responses_batch_equals_generate_alone(gpt2_worker, reference):
    """/v1/responses lines (a string input with instructions, a list of message items) run
    on the generate deployment, greedy; each Response's output_text is the model
    generating that prompt alone. What a batch cannot do (tools) is that line's error."""
    import io
    import json
    import time

    import openai

    from docbatch.schema.settings import get_settings
    from docbatch.worker.batches import tick
    from tests.fixtures import new_api_key
    from tests.procs import ApiProcess

    worker, prefix = gpt2_worker
    proc = ApiProcess(
        {"DOCBATCH_QUEUE_PREFIX": prefix, "DOCBATCH_OPENAI_MODELS": '{"tiny-gpt2": "generate"}'}
    ).wait_ready()
    _, tok = reference
    docs = short_docs(3)
    bodies = {
        "plain": {"input": docs[0]["text"][:150], "instructions": "Answer in one line."},
        "items": {
            "input": [
                {"role": "developer", "content": "Be brief."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": docs[1]["text"][:150]}],
                },
            ]
        },
        "string": {"input": docs[2]["text"][:150]},
        "tools": {"input": "hi", "tools": [{"type": "function", "name": "f"}]},
    }
    expected_messages = {
        "plain": [
            {"role": "system", "content": "Answer in one line."},
            {"role": "user", "content": docs[0]["text"][:150]},
        ],
        "items": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": docs[1]["text"][:150]},
        ],
        "string": [{"role": "user", "content": docs[2]["text"][:150]}],
    }
    lines = [
        {
            "custom_id": cid,
            "method": "POST",
            "url": "/v1/responses",
            "body": {"model": "tiny-gpt2", "max_output_tokens": 8, "temperature": 0, **body},
        }
        for cid, body in bodies.items()
    ]
    try:
        client = openai.OpenAI(
            base_url=f"{proc.url}/v1", api_key=new_api_key("responses"), max_retries=0
        )
        data = "".join(json.dumps(x) + "\n" for x in lines).encode()
        f = client.files.create(file=("responses.jsonl", io.BytesIO(data)), purpose="batch")
        batch = client.batches.create(
            input_file_id=f.id, endpoint="/v1/responses", completion_window="24h"
        )
        deadline = time.monotonic() + 240
        while batch.status not in ("completed", "failed", "cancelled", "expired"):
            assert time.monotonic() < deadline, (batch, worker.log[-2000:])
            time.sleep(0.5)
            tick(get_settings())  # the beat's batch tick: finalizes it once its job ends
            batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed", batch
        assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 1)
        out = {
            x["custom_id"]: x["response"]["body"]
            for x in map(json.loads, client.files.content(batch.output_file_id).text.splitlines())
        }
        assert set(out) == set(expected_messages)
        for cid, messages in expected_messages.items():
            body = out[cid]
            assert body["object"] == "response" and body["model"] == "tiny-gpt2"
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            text = alone(reference, prompt, new=8, add_special_tokens=False)
            [message] = body["output"]
            assert message["type"] == "message" and message["role"] == "assistant"
            assert message["content"][0]["type"] == "output_text"
            assert message["content"][0]["text"] == body["output_text"] == text
            usage = body["usage"]
            assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
            assert usage["input_tokens"] == len(tok(prompt, add_special_tokens=False)["input_ids"])
            # A random model never stops by itself: cut at max_output_tokens.
            assert usage["output_tokens"] == 8
            assert body["status"] == "incomplete"
            assert body["incomplete_details"] == {"reason": "max_output_tokens"}
        [error] = [
            json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()
        ]
        assert error["custom_id"] == "tools"
        assert error["response"]["body"]["error"]["param"] == "tools"
        assert "not supported" in error["response"]["body"]["error"]["message"]
    finally:
        proc.stop()


def test_one_responses_batch_on_two_generate_deployments(gpt2_worker, tiny_gpt2, reference):  # noqa: F811
    """/v1/responses lines naming two generate deployments (the default through an alias,
    and a named one with its own worker) in one batch: each line runs on the model it
    named (greedy: the text of that prompt generated alone), the output keeps the input
    order, and the batch's usage adds up every line's tokens, whichever deployment ran it
    (the named deployment's lines counted no output tokens before)."""
    import io
    import json
    import time

    import openai

    from docbatch.schema.settings import get_settings
    from docbatch.worker.batches import tick
    from tests.fixtures import new_api_key
    from tests.procs import ApiProcess

    _, prefix = gpt2_worker
    env = {
        "DOCBATCH_QUEUE_PREFIX": prefix,
        "DOCBATCH_OPENAI_MODELS": '{"tiny-gpt2": "generate"}',
        "DOCBATCH_DEPLOYMENTS": json.dumps(
            [{"name": "gpt2-named", "task": "generate", "model": tiny_gpt2}]
        ),
    }
    named = WorkerProcess("gpt2-named", env=env, name="gpt2-named", deployment=True)
    proc = ApiProcess(env).wait_ready()
    _, tok = reference
    docs = short_docs(4)
    models = ["gpt2-named", "tiny-gpt2", "gpt2-named", "tiny-gpt2"]
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/responses",
            "body": {
                "model": model,
                "input": d["text"][:150],
                "max_output_tokens": 8,
                "temperature": 0,
            },
        }
        for i, (model, d) in enumerate(zip(models, docs, strict=True))
    ]
    try:
        named.wait_ready()
        client = openai.OpenAI(
            base_url=f"{proc.url}/v1", api_key=new_api_key("responses"), max_retries=0
        )
        data = "".join(json.dumps(x) + "\n" for x in lines).encode()
        f = client.files.create(file=("two.jsonl", io.BytesIO(data)), purpose="batch")
        batch = client.batches.create(
            input_file_id=f.id, endpoint="/v1/responses", completion_window="24h"
        )
        deadline = time.monotonic() + 240
        while batch.status not in ("completed", "failed", "cancelled", "expired"):
            assert time.monotonic() < deadline, (batch, named.log[-2000:])
            time.sleep(0.5)
            tick(get_settings())  # the beat's batch tick: finalizes it once its job ends
            batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed" and batch.request_counts.completed == 4, batch
        out = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
        assert [x["custom_id"] for x in out] == ["r0", "r1", "r2", "r3"]
        prompt_tokens = output_tokens = 0
        for x, line in zip(out, lines, strict=True):
            body = x["response"]["body"]
            assert body["model"] == line["body"]["model"]
            messages = [{"role": "user", "content": line["body"]["input"]}]
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            assert body["output_text"] == alone(reference, prompt, new=8, add_special_tokens=False)
            prompt_tokens += body["usage"]["input_tokens"]
            output_tokens += body["usage"]["output_tokens"]
        assert output_tokens == 4 * 8
        assert (batch.usage.input_tokens, batch.usage.output_tokens) == (
            prompt_tokens,
            output_tokens,
        )
    finally:
        proc.stop()
        named.stop()


def test_responses_input_is_a_chat_on_a_chat_model_and_the_prompt_on_a_base_model(reference):
    import copy

    import pytest

    from docbatch.domain.openai.responses import Unsupported, to_generate
    from docbatch.worker.handlers.prompts import build_prompt

    _, tok = reference
    base = copy.copy(tok)
    base.chat_template = None
    text, params = to_generate({"input": "Hello there", "instructions": "Be brief."})
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    assert build_prompt(text, params, tok).text == tok.apply_chat_template(
        chat, tokenize=False, add_generation_prompt=True
    )
    plain = build_prompt(text, params, base)
    assert (plain.text, plain.special_tokens) == ("Be brief.\n\nHello there", True)
    for body, param in [
        ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": "x", "reasoning": {"effort": "low"}}, "reasoning"),
        ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format"),
        ({"input": [{"type": "function_call_output", "output": "1"}]}, "input[0]"),
    ]:
        with pytest.raises(Unsupported) as refused:
            to_generate(body)
        assert refused.value.param == param
