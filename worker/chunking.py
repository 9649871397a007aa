"""Token-aware chunking that never drops a character.

A document is cut into contiguous character spans that together cover the whole
text. Cuts fall on sentence or paragraph boundaries when a sentence fits the
token limit, else between tokens. Each span holds at most ``max_tokens`` of the
model's tokens (special tokens excluded; callers pass the model limit minus those).

    >>> chunks = chunk_text(text, tokenizer, max_tokens=254)
    >>> "".join(c.text for c in chunks) == text
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Sentence ends (. ! ? followed by space) and blank lines are preferred cut points.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n\s*|\n(?=\s*[-*\d])")


@dataclass(frozen=True)
class Chunk:
    start: int
    end: int
    text: str
    tokens: int
    # Chunks of one group are batched together (see docbatch.worker.handlers.base.GROUP_PARAM).
    group: str = ""


_ABBREVIATION = re.compile(r"(?:\b(?:e\.g|i\.e|etc|vs|cf|al|approx|Mr|Mrs|Dr|No|Fig)\.|\b[A-Z]\.)$")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Contiguous spans covering ``text``, each ending after a boundary's whitespace."""
    spans = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        # "e.g. foo" is not a sentence end; neither is an initial ("J. Smith").
        if m.end() > start and not _ABBREVIATION.search(text, start, m.start()):
            spans.append((start, m.end()))
            start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def _token_ends(text: str, tokenizer: Any) -> list[int]:
    """Character offset where each token ends, in order (fast tokenizers only)."""
    enc = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False
    )
    return [end for (_start, end) in enc["offset_mapping"]]


def count_tokens(text: str, tokenizer: Any) -> int:
    return len(tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"])


def token_ends_many(texts: list[str], tokenizer: Any) -> list[list[int]] | None:
    """``_token_ends`` of many texts in one call to a fast tokenizer's Rust backend, or None
    when the tokenizer has no such backend (callers then tokenize one text at a time)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    # transformers sets these per call anyway; a bare call must not truncate or pad.
    if backend.truncation is not None:
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    return [
        [end for (_s, end) in enc.offsets]
        for enc in backend.encode_batch(texts, add_special_tokens=False)
    ]


def chunk_text(
    text: str, tokenizer: Any, max_tokens: int, ends: list[int] | None = None
) -> list[Chunk]:
    """``ends``: the text's token end offsets when already known (``token_ends_many``)."""
    if max_tokens < 8:
        raise ValueError(f"max_tokens must be at least 8, got {max_tokens}")
    if ends is None:
        ends = _token_ends(text, tokenizer)
    if len(ends) <= max_tokens:
        return [Chunk(0, len(text), text, len(ends))]
    # tokens_before[c] = number of tokens ending at or before character c.
    import bisect

    def tokens_in(a: int, b: int) -> int:
        return bisect.bisect_right(ends, b) - bisect.bisect_right(ends, a)

    pieces: list[tuple[int, int]] = []
    for s, e in sentence_spans(text):
        if tokens_in(s, e) <= max_tokens:
            pieces.append((s, e))
            continue
        # A sentence longer than the limit: cut it between tokens, preferring a space.
        cur = s
        while tokens_in(cur, e) > max_tokens:
            first = bisect.bisect_right(ends, cur)
            cut = ends[first + max_tokens - 1]
            space = text.rfind(" ", cur + 1, cut + 1)
            if space > cur and tokens_in(cur, space) >= max_tokens // 2:
                cut = space + 1
            pieces.append((cur, cut))
            cur = cut
        if cur < e:
            pieces.append((cur, e))
    chunks: list[Chunk] = []
    cs, ce, ct = pieces[0][0], pieces[0][0], 0
    for s, e in pieces:
        n = tokens_in(s, e)
        if ct and ct + n > max_tokens:
            chunks.append(_make(text, cs, ce, tokenizer, max_tokens))
            cs, ct = s, 0
        ce = e
        ct += n
    chunks.append(_make(text, cs, ce, tokenizer, max_tokens))
    return [c for part in chunks for c in _enforce(part, text, tokenizer, max_tokens)]


def _make(text: str, s: int, e: int, tokenizer: Any, max_tokens: int) -> Chunk:
    piece = text[s:e]
    return Chunk(s, e, piece, count_tokens(piece, tokenizer))


def _enforce(chunk: Chunk, text: str, tokenizer: Any, max_tokens: int) -> list[Chunk]:
    """Re-tokenizing a span can differ at its edges; halve any span still over the limit."""
    if chunk.tokens <= max_tokens or chunk.end - chunk.start < 2:
        return [chunk]
    mid = (chunk.start + chunk.end) // 2
    space = text.rfind(" ", chunk.start + 1, mid + 1)
    if space > chunk.start:
        mid = space + 1
    left = _make(text, chunk.start, mid, tokenizer, max_tokens)
    right = _make(text, mid, chunk.end, tokenizer, max_tokens)
    return _enforce(left, text, tokenizer, max_tokens) + _enforce(
        right, text, tokenizer, max_tokens
    )


def coverage(text: str, chunks: list[Chunk]) -> float:
    """Fraction of ``text``'s characters inside some chunk (1.0 means nothing was dropped)."""
    if not text:
        return 1.0
    covered = [False] * len(text)
    for c in chunks:
        for i in range(c.start, c.end):
            covered[i] = True
    return sum(covered) / len(text)
