"""The model alone: ``SentenceTransformer.encode`` of given chunks in a fresh process.

    python -m bench.direct chunks.json --threads 2   # prints {"load_s", "encode_s", ...}

Run as its own process so its wall clock (interpreter start, imports, model load)
compares with a docbatch worker's, and its threads with the worker's threads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

T0 = time.monotonic()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("chunks", help="JSON list of chunk texts")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    import torch
    from sentence_transformers import SentenceTransformer

    from docbatch.worker.handlers.minilm import bundled_minilm_path

    if args.threads:
        torch.set_num_threads(args.threads)
    with open(args.chunks, encoding="utf-8") as fh:
        chunks = json.load(fh)
    model = SentenceTransformer(bundled_minilm_path(), device=args.device)
    loaded = time.monotonic()
    with torch.inference_mode():
        model.encode(
            chunks,
            batch_size=args.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    done = time.monotonic()
    json.dump(
        {
            "startup_load_s": loaded - T0,
            "encode_s": done - loaded,
            "wall_s": done - T0,
            "chunks": len(chunks),
            "threads": torch.get_num_threads(),
            "pid": os.getpid(),
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
