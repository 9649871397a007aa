"""Shared by the seq2seq tests: a worker on its own queues, and jobs submitted to them."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

from tests.settings_env import override


def own_prefix(name: str) -> str:
    return f"t-{name}-{secrets.token_hex(3)}"


@contextlib.contextmanager
def queue_prefix(prefix: str) -> Iterator[None]:
    """Jobs created inside go to ``<prefix>.<task>`` queues (units remember their queue)."""
    with override(queue_prefix=prefix):
        yield


def greedy_env(task: str, max_new_tokens: int = 12) -> dict[str, str]:
    """Greedy, short generation: random tiny models never emit EOS on their own."""
    key = f"DOCBATCH_MODELS__{task.upper()}__GENERATION__"
    return {
        key + "NUM_BEAMS": "1",
        key + "MAX_NEW_TOKENS": str(max_new_tokens),
        key + "MIN_NEW_TOKENS": "4",
    }
