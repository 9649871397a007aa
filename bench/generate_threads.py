"""Torch threads and a tiny generator on a shared CPU: the same batches, side by side.

Each setting runs in a fresh process (OpenMP reads its environment once): the tiny Marian
(translate) on the stdlib corpus's chunks, in the handler's token-budget batches, timed
round after round, the settings alternating so a change in the machine's load hits all
of them. It prints seconds per setting and the machine's load average.

    .venv/bin/python -m bench.generate_threads [--docs 80] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from statistics import median

SETTINGS: list[tuple[str, dict[str, str]]] = [
    ("torch threads 1", {"T": "1"}),
    ("torch threads 2", {"T": "2"}),
    ("torch threads 2, OMP_WAIT_POLICY=PASSIVE", {"T": "2", "OMP_WAIT_POLICY": "PASSIVE"}),
]


def child(docs: int) -> float:
    import torch

    from bench.env import CORPUS
    from bench.task_paths import GREEDY_ENV, _budget_batches
    from docbatch.schema.settings import GenerationConfig, ModelConfig
    from docbatch.worker.handlers.translate import TranslateHandler
    from tests.tiny_models import _cache_dir, build_all

    torch.set_num_threads(int(os.environ["T"]))
    tiny = build_all(_cache_dir())
    gen = GenerationConfig(**json.loads(GREEDY_ENV))
    h = TranslateHandler(ModelConfig(model=tiny["marian_template"], generation=gen))
    h.setup("cpu")
    lines = (CORPUS / "stdlib-docs.jsonl").read_text(encoding="utf-8").splitlines()[:docs]
    params = {"source_lang": "en", "target_lang": "de"}
    chunks = [
        c for d in map(json.loads, lines) for c in h.chunk_for(d["text"], params) if c.text.strip()
    ]
    model = h.resolve("en", "de").model
    batches = _budget_batches([c.tokens for c in chunks], h.batch_budget)
    model.generate([chunks[0].text], h.generation)  # warm-up
    t0 = time.perf_counter()
    for batch in batches:
        model.generate([chunks[i].text.strip() for i in batch], h.generation)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--docs", type=int, default=80)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps({"seconds": child(args.docs)}))
        return 0
    seconds: dict[str, list[float]] = {name: [] for name, _ in SETTINGS}
    loads = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for name, env in SETTINGS:
            base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.generate_threads",
                    "--child",
                    "--docs",
                    str(args.docs),
                ],
                env={**base, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env},
                capture_output=True,
                text=True,
                check=True,
            )
            seconds[name].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
            loads.append(os.getloadavg()[0])
    base = median(seconds[SETTINGS[0][0]])
    for name, got in seconds.items():
        runs = ", ".join(f"{s:.2f}" for s in got)
        print(f"{name}: median {median(got):.2f}s ({runs}); vs 1 thread {median(got) / base:.2f}x")
    print(f"{args.docs} stdlib docs, tiny Marian; load average {min(loads):.2f}-{max(loads):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
