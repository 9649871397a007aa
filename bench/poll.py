"""Cost of one poll (``GET /v1/jobs/{id}``): the api's CPU per request and its latency.

One client polls sequentially, so the figure is the api's own work per poll, not
queueing. ``--against DIR`` starts the api of another checkout on the same database
and alternates blocks of polls between the two (same machine load for both)::

    python -m bench.poll --against /work/main --polls 2000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.env import ROOT, BenchEnv
from bench.export import ApiFrom, seed_job
from bench.load import _tree_cpu_seconds


def measure(
    env: BenchEnv, against: Path | None, polls: int, block: int = 200, extra_path: str = ""
) -> dict[str, Any]:
    job_id = seed_job(10)
    apis = [ApiFrom(env, ROOT, "api-this", extra_path)]
    if against is not None:
        apis.insert(0, ApiFrom(env, against, "api-against"))
    cpu: dict[str, float] = {a.name: 0.0 for a in apis}
    lat: dict[str, list[float]] = {a.name: [] for a in apis}
    for a in apis:  # warm-up: connections, key cache, imports
        for _ in range(20):
            assert a.client.get(f"/v1/jobs/{job_id}").status_code == 200
    for r in range(max(1, polls // block)):
        for a in apis if r % 2 == 0 else list(reversed(apis)):
            c0 = _tree_cpu_seconds(a.proc.pid)
            for _ in range(block):
                t0 = time.perf_counter()
                resp = a.client.get(f"/v1/jobs/{job_id}")
                lat[a.name].append(time.perf_counter() - t0)
                assert resp.status_code == 200, resp.text
            cpu[a.name] += _tree_cpu_seconds(a.proc.pid) - c0
    out: dict[str, Any] = {}
    for a in apis:
        n = len(lat[a.name])
        out[a.name] = {
            "polls": n,
            "api_cpu_ms_per_poll": round(1000 * cpu[a.name] / n, 3),
            "p50_ms": round(1000 * statistics.median(lat[a.name]), 2),
            "p99_ms": round(1000 * sorted(lat[a.name])[int(0.99 * (n - 1))], 2),
        }
    if against is not None:
        out["cpu_ratio_against_over_this"] = round(
            out["api-against"]["api_cpu_ms_per_poll"] / out["api-this"]["api_cpu_ms_per_poll"], 2
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--polls", type=int, default=2000, help="per api")
    p.add_argument("--against", type=Path, help="another checkout to compare (e.g. /work/main)")
    p.add_argument(
        "--extra-path",
        default="",
        help="more sys.path for this checkout's api (e.g. a pip --target dir with uvloop)",
    )
    args = p.parse_args(argv)
    env = BenchEnv(Path(tempfile.mkdtemp(prefix="docbatch-poll-"))).open()
    try:
        out = measure(env, args.against, args.polls, extra_path=args.extra_path)
    finally:
        env.close()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
