"""CUDA out-of-memory in a batch: split, retry, shrink the budget; every chunk still done."""

from __future__ import annotations

import pytest

from docbatch.schema.settings import ModelConfig
from docbatch.worker.batching import MIN_BUDGET, BatchRunner
from tests.fakes import OomAboveHandler

pytestmark = pytest.mark.fast


def test_oom_splits_the_batch_and_shrinks_the_budget():
    handler = OomAboveHandler(ModelConfig(batch_tokens=4096, max_batch_rows=64), max_rows=3)
    handler.setup("cpu")
    texts = [f"chunk number {i} " * (1 + i % 5) for i in range(40)]
    lengths = [len(t.split()) for t in texts]
    runner = BatchRunner(handler)
    outputs, failures, stopped = runner.run(texts, lengths, {}, lambda: False)
    assert failures == {} and not stopped
    assert outputs == [t.upper() for t in texts]
    assert MIN_BUDGET <= runner.budget < 4096
    # Batches that fit went through; only those over the limit were split.
    done = [n for n in handler.batch_sizes if n <= 3]
    assert sum(done) == len(texts)
    assert max(handler.batch_sizes) > 3


def test_oom_on_a_single_chunk_fails_only_that_chunk():
    handler = OomAboveHandler(ModelConfig(batch_tokens=4096), max_rows=0)
    handler.setup("cpu")
    outputs, failures, _ = BatchRunner(handler).run(["a b", "c d e"], [2, 3], {}, lambda: False)
    assert outputs == [None, None]
    assert set(failures) == {0, 1}
    assert all("out of memory on a single chunk" in reason for reason in failures.values())
