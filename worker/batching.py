"""Length-sorted, token-budget batching (the text-embeddings-inference rule).

A batch's cost is its padded size, ``longest row x rows``; batches are filled
in order of length so rows of similar length share a batch and padding stays small.

    >>> plan_batches([5, 300, 7, 280], budget=600)
    [[1, 3], [2, 0]]

With ``batch_cost`` (what one more batch costs, in padded tokens: the per-call work of
tokenizing and launching a forward pass), the cut points are chosen to minimise
``padded tokens + batch_cost x batches`` instead of filling every batch to the budget.
That matters for an encoder on a unit's few hundred rows: filled greedily, the first
batch's width is the unit's longest row and its other rows, much shorter, are mostly
padding (the stdlib corpus's sentences: 183,152 padded tokens greedily, 116,616 this way,
for 107,930 real ones). A generator pays per decode step for every batch, so it keeps the
greedy fill (``batch_cost`` None).

    >>> plan_batches([300, 280, 12, 10], budget=600, batch_cost=9)
    [[0], [1], [2, 3]]

``BatchRunner`` feeds a handler those batches: on an out-of-memory error it splits the
batch and shrinks the budget, and a batch that fails is split until the failing rows
are alone (each fails with its reason, the others go on).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from docbatch.schema.errors import PermanentError
from docbatch.worker import metrics, threads

if TYPE_CHECKING:
    from docbatch.worker.handlers.base import Handler

log = logging.getLogger("docbatch.worker")
MIN_BUDGET = 256

# Above this many rows the greedy fill is already close to optimal (lengths are dense),
# and the exact plan's cost (one vector operation per row) is not worth paying.
EXACT_MAX_ROWS = 4096


def plan_batches(
    lengths: list[int], budget: int, max_rows: int = 256, batch_cost: int | None = None
) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches whose padded size fits ``budget``,
    longest first. A single row longer than the budget still gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if batch_cost is not None and 1 < len(order) <= EXACT_MAX_ROWS:
        return _cheapest(order, lengths, budget, max_rows, batch_cost)
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = max(1, lengths[i])
        width = max(longest, n)
        if current and (width * (len(current) + 1) > budget or len(current) >= max_rows):
            batches.append(current)
            current, width = [], n
        current.append(i)
        longest = width
    if current:
        batches.append(current)
    return batches


def _cheapest(
    order: list[int], lengths: list[int], budget: int, max_rows: int, batch_cost: int
) -> list[list[int]]:
    """Contiguous runs of ``order`` (longest first) minimising padded tokens plus
    ``batch_cost`` per batch, each within ``budget`` and ``max_rows`` (dynamic programming:
    best[j] is the cheapest plan for the first j rows)."""
    width = np.array([max(1, lengths[i]) for i in order], dtype=np.int64)
    n = len(width)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    start = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):  # a batch starting at row i has row i's width
        rows = int(max(1, min(max_rows, budget // width[i], n - i)))
        cost = best[i] + width[i] * np.arange(1, rows + 1) + batch_cost
        ends = slice(i + 1, i + rows + 1)
        # <=: of equal plans, the one whose later batches start later (fuller first ones).
        better = cost <= best[ends]
        best[ends] = np.where(better, cost, best[ends])
        start[ends] = np.where(better, i, start[ends])
    batches: list[list[int]] = []
    j = n
    while j > 0:
        i = int(start[j])
        batches.append(order[i:j])
        j = i
    return batches[::-1]


def is_oom(exc: BaseException) -> bool:
    # torch's own type when torch is loaded (no torch, no torch OOM); other backends
    # (ctranslate2, a CPU allocator) only say so in the message.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    return "out of memory" in str(exc).lower()


def reason_of(exc: BaseException) -> str:
    """A document's failure reason: a permanent error's own words, else its type too."""
    if isinstance(exc, PermanentError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class BatchRunner:
    """Feeds a handler token-budget batches; splits on OOM and isolates failing chunks."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.budget = handler.batch_budget

    def run(
        self,
        texts: list[str],
        lengths: list[int],
        params: dict[str, Any],
        should_stop: Callable[[], bool],
        groups: list[str] | None = None,
    ) -> tuple[list[Any], dict[int, str], bool]:
        """Outputs per text (None where failed), failures {index: reason}, stopped early.

        With ``groups``, each group's texts are batched apart and ``predict`` gets the
        group as ``params[GROUP_PARAM]``.
        """
        from docbatch.worker.handlers.base import GROUP_PARAM

        outputs: list[Any] = [None] * len(texts)
        failures: dict[int, str] = {}
        members: dict[str, list[int]] = {}
        for i, g in enumerate(groups or [""] * len(texts)):
            members.setdefault(g, []).append(i)
        for group, idx in members.items():
            gparams = {**params, GROUP_PARAM: group} if group else params
            batches = plan_batches(
                [lengths[i] for i in idx],
                self.budget,
                self.handler.config.max_batch_rows,
                self.handler.batch_cost(gparams),
            )
            for batch in batches:
                if should_stop():
                    return outputs, failures, True
                threads.rebalance()
                self._run_one([idx[j] for j in batch], texts, lengths, gparams, outputs, failures)
        return outputs, failures, False

    def _run_one(
        self,
        batch: list[int],
        texts: list[str],
        lengths: list[int],
        params: dict[str, Any],
        outputs: list[Any],
        failures: dict[int, str],
    ) -> None:
        try:
            with metrics.timed_batch(
                self.handler.task, self.handler.deployment, [lengths[i] for i in batch]
            ):
                result = self.handler.run_batch([texts[i] for i in batch], params)
        except Exception as exc:
            if is_oom(exc):
                _free_device_memory()
                self.budget = max(MIN_BUDGET, self.budget // 2)
                log.warning(
                    "out of memory on %d rows; budget now %d tokens", len(batch), self.budget
                )
                if len(batch) == 1:
                    failures[batch[0]] = f"out of memory on a single chunk: {exc}"
                    return
            elif len(batch) == 1:
                failures[batch[0]] = reason_of(exc)
                return
            # Split to isolate the failing rows (or to fit memory) and go on.
            half = len(batch) // 2
            for part in (batch[:half], batch[half:]):
                self._run_one(part, texts, lengths, params, outputs, failures)
            return
        for i, out in zip(batch, result, strict=True):
            outputs[i] = out


def _free_device_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort
        pass
