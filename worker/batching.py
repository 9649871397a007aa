"""Length-sorted, token-budget batching (the text-embeddings-inference rule).

A batch's cost is its padded size, ``longest row x rows``; batches are filled
in order of length so rows of similar length share a batch and padding stays small.

    >>> plan_batches([5, 300, 7, 280], budget=600)
    [[1, 3], [2, 0]]
"""

from __future__ import annotations


def plan_batches(lengths: list[int], budget: int, max_rows: int = 256) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches whose padded size fits ``budget``.

    A single row longer than the budget still gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
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
