"""The fixed cost per unit: where a worker's time goes between two units' model calls.

For a no-op model (the orchestration alone), the tiny BART (abstractive summarize) and the
tiny Marian (translate), one real worker runs the stdlib corpus through the api. The runner
logs one line per chain of units (docbatch.worker.chain_clock): model compute, and what the
compute thread waited for (the next claimed unit; the writer). From them, per unit:

- model ms: the stage's compute (chunking is in the claim's prepare, off this thread);
- overhead ms: (first claim -> last unit done) minus the model time, per unit;
  split into waiting for the next claim, waiting for the writer, starting each unit
  (counting a claimed-ahead unit's attempt, the first cancel check), and time outside any
  chain (Celery delivery and ack of each message, skipped messages of units claimed
  ahead, the heartbeat and lease bookkeeping between chains);
- claim ms and write ms: the claim (lease, ledger claim, load, chunk) and the write
  (results, close, commit, outbox publish): on threads they overlap the compute; inline
  (``DOCBATCH_WORKER_OVERLAP=auto`` on a CPU) they are the waits.

With ``--profile DIR``, py-spy samples the worker's pool process over the job and each
path gets the runner's phases in seconds and ms per unit (bench/spy.py): the claim's
parts (next-unit query, lease, ledger claim, load, chunking), the write's (results
insert, close, accounting, commit and outbox publish, lease release), the compute's, and
the main thread outside the runner (Celery's delivery and ack of each message).

    .venv/bin/python -m bench.unit_overhead [--docs 396] [--unit-tokens 8192] [--profile DIR]
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
from bench.spy import Spy, pool_child, report
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
    p.add_argument("--threads", type=int, default=1, help="DOCBATCH_TORCH_THREADS")
    p.add_argument("--overlap", default="auto", help="DOCBATCH_WORKER_OVERLAP")
    p.add_argument("--profile", type=Path, default=None, help="py-spy the workers into DIR")
    p.add_argument("--only", nargs="*", default=None, help="paths whose name contains these")
    args = p.parse_args(argv)
    lines = (CORPUS / "stdlib-docs.jsonl").read_text(encoding="utf-8").splitlines()
    docs = [{"custom_id": d["custom_id"], "text": d["text"]} for d in map(json.loads, lines)]
    docs = docs[: args.docs]
    tmp = Path(tempfile.mkdtemp(prefix="docbatch-overhead-"))
    env = BenchEnv(tmp / "logs").open()
    api = Api(env, "api-overhead", {"DOCBATCH_UNIT_TOKENS": str(args.unit_tokens)})
    print(
        "| path | units | model ms/unit | overhead ms/unit | waiting for the next claim | "
        "waiting for the writer | starting the unit | outside chains | claim ms/unit | "
        "write ms/unit | model share of the steady window |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    profiles: list[str] = []
    try:
        for name, task, spec, extra in setups(tmp):
            if args.only and not any(o in name for o in args.only):
                continue
            worker_env = {
                "DOCBATCH_TORCH_THREADS": str(args.threads),
                "DOCBATCH_WORKER_OVERLAP": args.overlap,
                **extra,
            }
            workers = start_workers(env, task, 1, worker_env, task)
            spy = None
            try:
                submit(api, f"{name} warm-up", spec, docs[:1])
                before = chains(env.log(f"worker-{task}-0.log"))
                if args.profile:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    raw = args.profile / f"{task}.txt"
                    spy = Spy(pool_child(workers[0].pid), raw)
                job_id = submit(api, name, spec, docs)
                if spy is not None:  # the job is done: what follows is idle
                    spy.stop()
                # A chain's line is logged after its last unit's commit ends the job.
                deadline = time.monotonic() + 60
                while (after := chains(env.log(f"worker-{task}-0.log")))["units"] <= before[
                    "units"
                ] and time.monotonic() < deadline:
                    time.sleep(0.5)
                time.sleep(1.0)
                after = chains(env.log(f"worker-{task}-0.log"))
            finally:
                if spy is not None:
                    spy.stop()
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
                f"{got.get('start', 0.0) * per:.1f} | {outside * per:.1f} | "
                f"{got['claim'] * per:.1f} | {got['write'] * per:.1f} | "
                f"{got['compute'] / steady:.3f} |",
                flush=True,
            )
            if spy is not None:
                profiles += [f"\n{name} (py-spy, {spy.rate} samples/s, {units} units):"]
                profiles += report(spy.out, spy.rate, units)
        print(
            f"\n1 worker, torch threads {args.threads}, DOCBATCH_WORKER_OVERLAP={args.overlap}, "
            f"DOCBATCH_UNIT_TOKENS={args.unit_tokens}, "
            f"{len(docs)} documents; machine: {json.dumps(machine())}. Claims and writes on "
            "threads overlap the compute and only the waits count; inline (overlap auto on a "
            "CPU) the waits are the claims and writes themselves."
        )
        print("\n".join(profiles))
        return 0
    finally:
        api.stop()
        env.close()


if __name__ == "__main__":
    raise SystemExit(main())
