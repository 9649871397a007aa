"""summarize, abstractive: a seq2seq model (BART/DistilBART, T5, Pegasus), map-reduce.

Map: every chunk of every document in the unit is summarized in the runner's
length-sorted token-budget batches. Reduce, per document: one chunk's summary is the
summary; otherwise the chunk summaries are joined and, if the join fits the model's
input, summarized once more; if not, the join is chunked and summarized again
(batched), round after round, until it fits. A round that does not shrink the text
fails the document with the setting to change, instead of looping. The reduce rounds of
all the unit's documents run together (``prepare_reduce``): each round is one set of
token-budget batches over every document still folding, not a model call per document.
"""

from __future__ import annotations

from typing import Any

from docbatch.schema.errors import PermanentError
from docbatch.worker.batching import plan_batches
from docbatch.worker.chunking import Chunk, count_tokens
from docbatch.worker.handlers.base import Output, UnitDocument
from docbatch.worker.handlers.seq2seq import Seq2SeqHandler

MAX_ROUNDS = 8


class AbstractiveSummarizeHandler(Seq2SeqHandler):
    task = "summarize"
    default_model = "sshleifer/distilbart-cnn-12-6"
    default_revision = "main"
    generation_defaults = {"num_beams": 4, "max_new_tokens": 142}

    def prepare_reduce(self, docs: list[UnitDocument], params: dict[str, Any]) -> None:
        """Fold every document's chunk summaries at once, round by round, batched."""
        self._folded: dict[tuple[str, ...], tuple[str, int] | PermanentError] = {}
        pending: dict[tuple[str, ...], tuple[str, int]] = {}  # key -> (joined, its tokens)
        for d in docs:
            summaries = tuple(o for o in d.outputs if o)
            if len(summaries) > 1 and summaries not in pending:
                joined = "\n".join(summaries)
                pending[summaries] = (joined, count_tokens(joined, self.tokenizer))
        for rounds in range(1, MAX_ROUNDS + 1):
            if not pending:
                return
            fits = [k for k, (_j, size) in pending.items() if size <= self.max_input_tokens]
            final = self._summarize_all(
                [Chunk(0, 0, pending[k][0], pending[k][1]) for k in fits], params
            )
            for k, summary in zip(fits, final, strict=True):
                self._folded[k] = (summary, rounds)
                del pending[k]
            parts = {k: self.chunk(joined) for k, (joined, _s) in pending.items()}
            flat = [c for k in pending for c in parts[k]]
            outs = iter(self._summarize_all(flat, params))
            for k, (_joined, size) in list(pending.items()):
                joined = "\n".join(s for s in (next(outs) for _ in parts[k]) if s)
                new_size = count_tokens(joined, self.tokenizer)
                if new_size >= size:
                    self._folded[k] = _no_shrink(size, new_size, self.max_input_tokens)
                    del pending[k]
                else:
                    pending[k] = (joined, new_size)
        for k in pending:
            self._folded[k] = PermanentError(
                f"summary still over the model input after {MAX_ROUNDS} rounds"
            )

    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        summaries = [o for o in outputs if o]
        rounds = 1
        summary = summaries[0] if summaries else ""
        if len(summaries) > 1:
            done = getattr(self, "_folded", {}).get(tuple(summaries))
            if isinstance(done, PermanentError):
                raise done
            summary, more = done if done is not None else self._fold(summaries, params)
            rounds += more
        return Output(
            {
                "summary": summary,
                "method": "abstractive",
                "rounds": rounds,
                # Every character of the document is in exactly one of these spans.
                "chunks": [[c.start, c.end, c.tokens] for c in chunks],
            }
        )

    def _fold(self, summaries: list[str], params: dict[str, Any]) -> tuple[str, int]:
        """Summarize the joined summaries until one pass covers them; returns (text, rounds)."""
        joined = "\n".join(summaries)
        size = count_tokens(joined, self.tokenizer)
        for rounds in range(1, MAX_ROUNDS + 1):
            if size <= self.max_input_tokens:
                return self.predict([joined], params)[0], rounds
            joined = "\n".join(s for s in self._summarize_all(self.chunk(joined), params) if s)
            new_size = count_tokens(joined, self.tokenizer)
            if new_size >= size:
                raise _no_shrink(size, new_size, self.max_input_tokens)
            size = new_size
        raise PermanentError(f"summary still over the model input after {MAX_ROUNDS} rounds")

    def _summarize_all(self, parts: list[Chunk], params: dict[str, Any]) -> list[str]:
        """Summaries of ``parts`` in order, in token-budget batches like the map step."""
        out = [""] * len(parts)
        lengths = [c.tokens for c in parts]
        for batch in plan_batches(lengths, self.batch_budget, self.config.max_batch_rows):
            summaries = self.predict([parts[i].text for i in batch], params)
            for i, summary in zip(batch, summaries, strict=True):
                out[i] = summary
        return out


def _no_shrink(size: int, new_size: int, limit: int) -> PermanentError:
    return PermanentError(
        f"chunk summaries do not shrink ({size} -> {new_size} tokens); lower "
        "DOCBATCH_MODELS__SUMMARIZE__GENERATION__MAX_NEW_TOKENS below half of the "
        f"model input ({limit} tokens)"
    )
