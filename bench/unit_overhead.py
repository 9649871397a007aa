"""The fixed cost per unit: where a worker's time goes between two units' model calls.

For a no-op model (the orchestration alone), the tiny BART (abstractive summarize) and the
tiny Marian (translate), one real worker runs the stdlib corpus through the api. The runner
logs one line per chain of units (docbatch.worker.chain_clock): model compute, and what the
compute thread waited for (the next claimed unit; the writer). From them, per unit:

- model ms: the stage's compute (chunking is in the claim's prepare, off this thread);
- overhead ms: (first claim -> last unit done) minus the model time, per unit;
  split into waiting for the next claim, waiting for the writer, and time outside any
  chain (Celery delivery and ack of each message, skipped messages of units claimed
  ahead, the heartbeat and lease bookkeeping between chains);
- claim ms and write ms: the claim (lease, ledger claim, load, chunk) and the write
  (results, close, commit, outbox publish), which overlap the compute on their threads.

    .venv/bin/python -m bench.unit_overhead [--docs 396] [--units-tokens 8192]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cluster import Api, start_workers, steady_window, stop_all
from bench.env import CORPUS, BenchEnv, machine
from bench.task_paths import GREEDY_ENV

CHAIN = re.compile(r"chain units=(\d+) wall=([\d.]+) (.*)$")


def chains(log: str) -> dict[str, float]:
    total: dict[str, float] = {"units": 0, "wall": 0.0}
    for line in log.splitlines():
        m = CHAIN.search(line)
        if not m:
            continue
        total["units"] += int(m.group(1))
        total["wall"] += float(m.group(2))
        for part in m.group(3).split():
            key, value = part.split("=")
            total[key] = total.get(key, 0.0) + float(value)
    return total


def setups(tmp: Path) -> list[tuple[str, str, dict[str, Any], dict[str, str]]]:
    from tests.tiny_models import _cache_dir, build_all

    tiny = build_all(_cache_dir())
    return [
        (
            "no-op model (embed path)",
            "embed",
            {"type": "embed"},
            {"DOCBATCH_MODELS__EMBED__HANDLER": "bench.handlers:NoopHandler"},
        ),
        (
            "summarize, abstractive (tiny BART)",
            "summarize",
            {"type": "summarize", "method": "abstractive"},
            {
                "DOCBATCH_MODELS__SUMMARIZE__MODEL": tiny["bart"],
                "DOCBATCH_MODELS__SUMMARIZE__GENERATION": GREEDY_ENV,
            },
        ),
        (
            "translate en->de (tiny Marian)",
            "translate",
            {"type": "translate", "source_lang": "en", "target_lang": "de"},
            {
                "DOCBATCH_MODELS__TRANSLATE__MODEL": tiny["marian_template"],
                "DOCBATCH_MODELS__TRANSLATE__GENERATION": GREEDY_ENV,
            },
        ),
    ]


def submit(api: Api, name: str, spec: dict[str, Any], docs: list[dict[str, Any]]) -> str:
    resp = api.client.post("/v1/jobs", json={"name": name, "tasks": [spec], "documents": docs})
    assert resp.status_code == 202, resp.text[:500]
    job = api.wait(resp.json()["id"], timeout=3600)
    assert job["status"] == "completed", job
    return str(job["id"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--docs", type=int, default=396, help="stdlib documents per job")
    p.add_argument("--unit-tokens", type=int, default=8192, help="DOCBATCH_UNIT_TOKENS")
    args = p.parse_args(argv)
    lines = (CORPUS / "stdlib-docs.jsonl").read_text(encoding="utf-8").splitlines()
    docs = [{"custom_id": d["custom_id"], "text": d["text"]} for d in map(json.loads, lines)]
    docs = docs[: args.docs]
    tmp = Path(tempfile.mkdtemp(prefix="docbatch-overhead-"))
    env = BenchEnv(tmp / "logs").open()
    api = Api(env, "api-overhead", {"DOCBATCH_UNIT_TOKENS": str(args.unit_tokens)})
    print(
        "| path | units | model ms/unit | overhead ms/unit | waiting for the next claim | "
        "waiting for the writer | outside chains | claim ms/unit (overlapped) | "
        "write ms/unit (overlapped) | model share of the steady window |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for name, task, spec, extra in setups(tmp):
            worker_env = {"DOCBATCH_TORCH_THREADS": "1", **extra}
            workers = start_workers(env, task, 1, worker_env, task)
            try:
                submit(api, f"{name} warm-up", spec, docs[:1])
                before = chains(env.log(f"worker-{task}-0.log"))
                job_id = submit(api, name, spec, docs)
                # A chain's line is logged after its last unit's commit ends the job.
                deadline = time.monotonic() + 60
                while (after := chains(env.log(f"worker-{task}-0.log")))["units"] <= before[
                    "units"
                ] and time.monotonic() < deadline:
                    time.sleep(0.5)
                time.sleep(1.0)
                after = chains(env.log(f"worker-{task}-0.log"))
            finally:
                stop_all(workers)
            got = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
            units = int(got["units"])
            steady, _chunks, _tokens = steady_window(job_id)
            per = 1000 / max(1, units)
            overhead = steady - got["compute"]
            outside = max(0.0, steady - got["wall"])
            print(
                f"| {name} | {units} | {got['compute'] * per:.1f} | {overhead * per:.1f} | "
                f"{got['claim_wait'] * per:.1f} | {got['write_wait'] * per:.1f} | "
                f"{outside * per:.1f} | {got['claim'] * per:.1f} | {got['write'] * per:.1f} | "
                f"{got['compute'] / steady:.3f} |",
                flush=True,
            )
        print(
            f"\n1 worker, torch threads 1, DOCBATCH_UNIT_TOKENS={args.unit_tokens}, "
            f"{len(docs)} documents; machine: {json.dumps(machine())}"
        )
        return 0
    finally:
        api.stop()
        env.close()


if __name__ == "__main__":
    raise SystemExit(main())
