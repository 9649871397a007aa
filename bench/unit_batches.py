"""How many generate calls a worker makes per unit vs the same chunks batched corpus-wide.

A worker batches each unit's chunks on their own (length-sorted, token budget), so every
unit ends on a partly filled batch and every reduce round of map-reduce summaries is at
least one batch per unit; the direct reference of ``bench.task_paths`` batches the whole
corpus at once. For the tiny models a batch's cost is mostly its decode steps, whatever
its rows, so the count of batches bounds the ratio the path can reach. Counted, not
timed (no model call), for the tiny BART (abstractive summarize) and the tiny Marian
(translate) on the stdlib corpus cut into ``--units`` equal units (the api cut the 396
documents into 14 at DOCBATCH_UNIT_TOKENS=8192)::

    .venv/bin/python -m bench.unit_batches [--docs 396] [--units 14 4 1]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench.task_paths import GREEDY_ENV
from docbatch.schema.settings import GenerationConfig, ModelConfig
from docbatch.worker.batching import plan_batches
from tests.fixtures import load_corpus
from tests.tiny_models import _cache_dir, build_all


def batches(handler: Any, lengths: list[int]) -> int:
    return len(plan_batches(lengths, handler.batch_budget, handler.config.max_batch_rows))


def main() -> None:
    from docbatch.worker.handlers.abstractive import AbstractiveSummarizeHandler
    from docbatch.worker.handlers.translate import TranslateHandler

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=396)
    ap.add_argument("--units", type=int, nargs="*", default=[14, 4, 1])
    args = ap.parse_args()
    docs = load_corpus("stdlib-docs.jsonl", args.docs)
    tiny = build_all(_cache_dir())
    greedy = GenerationConfig(**json.loads(GREEDY_ENV))
    cases: list[tuple[str, Any, str, dict[str, Any]]] = [
        ("summarize, abstractive (tiny BART)", AbstractiveSummarizeHandler, tiny["bart"], {}),
        (
            "translate en->de (tiny Marian)",
            TranslateHandler,
            tiny["marian_template"],
            {"source_lang": "en", "target_lang": "de"},
        ),
    ]
    print("path | units | map batches | reduce batches, first round (at least) | chunks")
    for name, cls, model, params in cases:
        h = cls(ModelConfig(model=model, generation=greedy))
        h.setup("cpu")
        per_doc = [[c for c in h.chunk_for(d["text"], params) if c.text.strip()] for d in docs]
        chunks = sum(len(cs) for cs in per_doc)
        for n in args.units:
            size = -(-len(docs) // n)
            units = [per_doc[k : k + size] for k in range(0, len(docs), size)]
            mapped = sum(batches(h, [c.tokens for cs in u for c in cs]) for u in units)
            # A first reduce round: one joined summary per multi-chunk document, each at
            # most a model input long (counted at the limit: a lower bound on rows' width).
            reduce = ""
            if cls is AbstractiveSummarizeHandler:
                width = h.max_input_tokens
                folds = sum(
                    batches(h, [width] * sum(1 for cs in u if len(cs) > 1)) if u else 0
                    for u in units
                )
                reduce = str(folds)
            print(f"{name} | {len(units)} | {mapped} | {reduce or '-'} | {chunks}")


if __name__ == "__main__":
    main()
