"""Why a worker's own ``generate`` runs slower than the bench process's: identical units, profiled.

For the tiny Marian (translate) and the tiny BART (abstractive summarize), one real worker
runs the stdlib corpus through the api while py-spy samples its pool process; then this
process runs **the same units** (each unit's documents, read back from the database) through
the same code (``docbatch.worker.model_stage.compute``: chunking aside, the same BatchRunner,
batches, handler and reduce), under py-spy too, with the same torch threads. Per side it
prints the model-call seconds (the ``docbatch_worker_model_latency_seconds`` sum), the CPU
seconds and context switches of the process over the job (``/proc``), and the leaf frames
py-spy saw most under ``generate``.

    .venv/bin/python -m bench.generate_gap [--threads 2] [--docs 396] [--native]
        [--cases translate abstractive] [--out /tmp/gap]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench.cluster import Api, start_workers, stop_all
from bench.env import CORPUS, BenchEnv, machine
from bench.spy import Spy, counters, delta, describe, leaves, pool_child
from bench.task_paths import GREEDY_ENV, worker_model_seconds
from docbatch.processes import free_port

GENERATE = "GenerationMixin.generate ("


def cases() -> dict[str, tuple[str, dict[str, Any], dict[str, str]]]:
    from tests.tiny_models import _cache_dir, build_all

    tiny = build_all(_cache_dir())
    return {
        "translate": (
            "translate",
            {"type": "translate", "source_lang": "en", "target_lang": "de"},
            {
                "DOCBATCH_MODELS__TRANSLATE__MODEL": tiny["marian_template"],
                "DOCBATCH_MODELS__TRANSLATE__GENERATION": GREEDY_ENV,
            },
        ),
        "abstractive": (
            "summarize",
            {"type": "summarize", "method": "abstractive"},
            {
                "DOCBATCH_MODELS__SUMMARIZE__MODEL": tiny["bart"],
                "DOCBATCH_MODELS__SUMMARIZE__GENERATION": GREEDY_ENV,
            },
        ),
    }


def replay(task: str, extra: dict[str, str], job_id: str, threads: int) -> float:
    """The job's units again in this process, through model_stage.compute; returns the
    model-call seconds (the same batch-latency metric the worker keeps)."""
    import torch
    from sqlalchemy import select

    from docbatch.domain.ledger import ClaimedDocument
    from docbatch.schema.config import load_settings
    from docbatch.schema.db import new_session
    from docbatch.schema.tables import Document, Job, JobTask, Unit
    from docbatch.worker import metrics
    from docbatch.worker.model_stage import PreparedUnit, compute, prepare
    from docbatch.worker.registry import load_handler

    os.environ.update(extra)
    settings = load_settings()
    torch.set_num_threads(threads)
    handler = load_handler(task, settings)
    handler.setup("cpu")
    with new_session(settings) as s:
        job = s.get(Job, job_id)
        assert job is not None
        params = next(t.params for t in s.scalars(select(JobTask).where(JobTask.job_id == job_id)))
        units = s.execute(
            select(Unit.id, Unit.seq_lo, Unit.seq_hi)
            .where(Unit.job_id == job_id, Unit.task == task)
            .order_by(Unit.claimed_at)
        ).all()
        docs = {
            d.seq: ClaimedDocument(d.id, d.custom_id, d.text)
            for d in s.scalars(select(Document).where(Document.job_id == job_id))
        }
    params = {k: v for k, v in params.items() if k != "type"}
    warm = PreparedUnit(job_id, 0, [docs[min(docs)]], params)
    compute(handler, prepare(handler, warm), lambda: False)
    before = metrics.MODEL_SECONDS.labels(handler.task, handler.deployment)._sum.get()
    for uid, lo, hi in units:
        prep = PreparedUnit(job_id, uid, [docs[q] for q in range(lo, hi + 1)], params)
        compute(handler, prepare(handler, prep), lambda: False)
    return float(metrics.MODEL_SECONDS.labels(handler.task, handler.deployment)._sum.get() - before)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--docs", type=int, default=396)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    p.add_argument("--native", action="store_true", help="py-spy --native (pauses to sample)")
    p.add_argument("--cases", nargs="*", default=["translate", "abstractive"])
    p.add_argument("--out", type=Path, default=None, help="keep the raw profiles here")
    p.add_argument("--worker-env", default="{}", help="extra worker environment (JSON)")
    args = p.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="docbatch-gap-"))
    out.mkdir(parents=True, exist_ok=True)
    lines = (CORPUS / "stdlib-docs.jsonl").read_text(encoding="utf-8").splitlines()
    docs = [{"custom_id": d["custom_id"], "text": d["text"]} for d in map(json.loads, lines)]
    docs = docs[: args.docs]
    env = BenchEnv(out / "logs").open()
    api = Api(env, "api-gap")
    known = cases()
    try:
        for name in args.cases:
            task, spec, extra = known[name]
            port = free_port()
            worker_env = {
                "DOCBATCH_TORCH_THREADS": str(args.threads),
                "DOCBATCH_WORKER_METRICS_PORT": str(port),
                **extra,
                **json.loads(args.worker_env),
            }
            workers = start_workers(env, task, 1, worker_env, name)
            try:
                for part in (docs[:1], docs):
                    if len(part) > 1:
                        child = pool_child(workers[0].pid)
                        spy = Spy(child, out / f"{name}-worker.txt", native=args.native)
                        c0, m0 = counters(child), worker_model_seconds(port, task)
                    resp = api.client.post(
                        "/v1/jobs", json={"name": name, "tasks": [spec], "documents": part}
                    )
                    assert resp.status_code == 202, resp.text[:500]
                    job = api.wait(resp.json()["id"], timeout=3600)
                    assert job["status"] == "completed", job
                c1, m1 = counters(child), worker_model_seconds(port, task)
                spy.stop()
            finally:
                stop_all(workers)
            w_counts, w_model = delta(c1, c0), m1 - m0
            spy = Spy(os.getpid(), out / f"{name}-bench.txt", native=args.native)
            b0 = counters(os.getpid())
            b_model = replay(task, extra, job["id"], args.threads)
            b1 = counters(os.getpid())
            spy.stop()
            b_counts = delta(b1, b0)
            for side, model_s, counts in (
                ("worker", w_model, w_counts),
                ("bench process, same units", b_model, b_counts),
            ):
                total, inside, top = leaves(out / f"{name}-{side.split()[0]}.txt", GENERATE)
                print(
                    f"{name} | {side}: model calls {model_s:.2f}s; {describe(counts)}; "
                    f"py-spy samples {total}, under generate {inside}",
                    flush=True,
                )
                for leaf, n in top:
                    print(f"    {n:6d}  {leaf}")
            print(f"{name}: worker / bench process model seconds {w_model / b_model:.2f}")
        print(f"\nthreads {args.threads}; profiles in {out}; machine: {json.dumps(machine())}")
        return 0
    finally:
        api.stop()
        env.close()


if __name__ == "__main__":
    raise SystemExit(main())
