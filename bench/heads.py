"""classify, entities, ask: the handler's whole path vs transformers pipelines and vs the
raw model on the same batches.

    .venv/bin/python -m bench.heads [--docs 200] [--threads 1] [--device cpu]

Per task, on the same stdlib documents and a random BERT head of MiniLM-L6's shape
(``tests/tiny_heads.py``, MiniLM's WordPiece; timing does not depend on trained weights):

- **handler**: ``docbatch.worker.runner.compute_unit``: chunking, length-sorted token-budget
  batches, the model, post-processing and reduce, everything a worker does per unit
  except the database;
- **pipeline**: transformers' pipeline called one input at a time, the usual way, on the
  handler's own chunks (a whole document would be truncated at 512 tokens by
  ``text-classification``/``token-classification``, i.e. less work):
  ``text-classification``, ``token-classification`` with ``aggregation_strategy="simple"``,
  and the 5.2.0 ``question-answering`` pipeline the tests vendor, once per question;
- **raw model**: tokenize + forward only, on exactly the handler's batches (no
  post-processing): ``efficiency = raw / handler`` time, the share of the handler's
  time that is the model.

The figures are printed; ``bench/run.py --only heads`` records them with the rest. With
``--clock cpu`` the three are timed in this process's CPU seconds instead of wall seconds:
on a loaded machine a wall figure mostly measures the other processes, while CPU time
still compares the same work (both sides run the same single-threaded kernels).

    .venv/bin/python -m bench.heads --tasks entities --clock cpu --repeats 3
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import torch

from docbatch.schema.settings import ModelConfig
from docbatch.worker.batching import plan_batches
from docbatch.worker.handlers.ask import AskHandler
from docbatch.worker.handlers.classify import ClassifyHandler
from docbatch.worker.handlers.entities import EntitiesHandler
from docbatch.worker.handlers.heads import HeadHandler
from docbatch.worker.model_stage import compute_unit
from tests.fixtures import ARTIFACTS, load_corpus
from tests.tiny_heads import MINILM, build_heads

QUESTIONS = ["What does the function return?", "Which module is it in?"]
TASKS: dict[str, tuple[type[HeadHandler], str, dict[str, Any]]] = {
    "classify": (ClassifyHandler, "sst", {"type": "classify"}),
    "entities": (EntitiesHandler, "ner", {"type": "entities", "aggregation": "simple"}),
    "ask": (AskHandler, "qa", {"type": "ask", "questions": QUESTIONS}),
}


def _pipeline(task: str, path: str, device: str) -> Any:
    from transformers import pipeline

    if task == "classify":
        pipe = pipeline("text-classification", model=path, device=device)
        return lambda text: pipe(text, truncation=True)
    if task == "entities":
        pipe = pipeline(
            "token-classification", model=path, aggregation_strategy="simple", device=device
        )
        return lambda text: pipe(text)
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from tests.reference.qa_pipeline_5_2 import QuestionAnsweringPipeline

    qa = QuestionAnsweringPipeline(
        model=AutoModelForQuestionAnswering.from_pretrained(path),
        tokenizer=AutoTokenizer.from_pretrained(path),
        device=device,
    )
    return lambda text: [qa(question=q, context=text) for q in QUESTIONS]


def _raw_model(handler: HeadHandler, chunks: list[Any], params: dict[str, Any]) -> None:
    """Tokenize and run the model on the handler's own batches, nothing else."""
    lengths = [c.tokens for c in chunks]
    tok = handler.tokenizer
    for batch in plan_batches(lengths, handler.batch_budget, handler.config.max_batch_rows):
        texts = [chunks[i].text for i in batch]
        if isinstance(handler, AskHandler):
            q, c = [], []
            for t in texts:
                for question in params["questions"]:
                    q.append(question)
                    c.append(t)
            step = max(1, handler.batch_budget // handler.max_seq_len)
            for i in range(0, len(q), step):
                enc = tok(
                    q[i : i + step],
                    c[i : i + step],
                    padding=True,
                    truncation="only_second",
                    max_length=handler.max_seq_len,
                    return_tensors="pt",
                )
                handler.forward(enc)
        else:
            handler.forward(tok(texts, padding=True, truncation=True, return_tensors="pt"))


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = CLOCKS["wall"]


def _seconds(fn: Any) -> float:
    start = _clock()
    fn()
    return _clock() - start


def _measure_task(
    task: str,
    handler: HeadHandler,
    path: str,
    params: dict[str, Any],
    texts: list[str],
    device: str,
    repeats: int,
) -> dict[str, Any]:
    docs_in = [(i, str(i), t) for i, t in enumerate(texts)]
    chunks = [c for t in texts for c in handler.chunk_for(t, params)]
    call = _pipeline(task, path, device)

    def whole_path() -> None:
        out = compute_unit(handler, docs_in, params, lambda: False, job_id="b", unit_id=1)
        assert all(r["status"] == "succeeded" for r in out.rows), out.rows[0]["error"]

    def one_at_a_time() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for c in chunks:
                call(c.text)

    # Interleaved, best of `repeats`: the first run of a shape pays for kernel set-up, and
    # on a shared machine the minimum is the least disturbed figure.
    ours = raw = base = float("inf")
    for _ in range(repeats):
        ours = min(ours, _seconds(whole_path))
        raw = min(raw, _seconds(lambda: _raw_model(handler, chunks, params)))
        base = min(base, _seconds(one_at_a_time))
    return {
        "task": task,
        "docs": len(texts),
        "chunks": len(chunks),
        "handler_s": ours,
        "pipeline_s": base,
        "raw_s": raw,
        "vs_pipeline": base / ours,
        "efficiency": raw / ours,
    }


def measure(
    docs: int = 200,
    device: str = "cpu",
    repeats: int = 2,
    tasks: list[str] | None = None,
    clock: str = "wall",
) -> list[dict[str, Any]]:
    global _clock
    _clock = CLOCKS[clock]
    paths = build_heads(ARTIFACTS / "bench-heads-minilm-shape", MINILM)
    texts = [d["text"] for d in load_corpus("stdlib-docs.jsonl", docs)]
    rows = []
    for task, (cls, key, params) in TASKS.items():
        if tasks and task not in tasks:
            continue
        handler = cls(ModelConfig(model=paths[key]))
        handler.setup(device)
        rows.append(_measure_task(task, handler, paths[key], params, texts, device, repeats))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2, help="best of N interleaved runs")
    ap.add_argument("--tasks", nargs="*", choices=list(TASKS), help="only these (default: all)")
    ap.add_argument("--clock", choices=list(CLOCKS), default="wall", help="seconds of what")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = measure(args.docs, args.device, args.repeats, args.tasks, args.clock)
    print(
        f"device={args.device} torch_threads={torch.get_num_threads()} clock={args.clock} "
        "(MiniLM-L6-shaped heads)"
    )
    print(
        f"{'task':<9} {'docs':>5} {'chunks':>6} {'handler s':>10} {'pipeline s':>11} "
        f"{'raw s':>7} {'vs pipeline':>12} {'efficiency':>10}"
    )
    for r in rows:
        print(
            f"{r['task']:<9} {r['docs']:>5} {r['chunks']:>6} {r['handler_s']:>10.2f} "
            f"{r['pipeline_s']:>11.2f} {r['raw_s']:>7.2f} {r['vs_pipeline']:>11.2f}x "
            f"{r['efficiency']:>10.2f}"
        )


if __name__ == "__main__":
    main()
