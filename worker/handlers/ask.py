"""ask: extractive question answering; every document gets an answer to each question.

Span selection is transformers' question-answering pipeline (5.2.0, the last release that
had it; ``select_starts_ends``, ``decode_spans``, word alignment and the summing of
candidates with the same text): question first, ``truncation="only_second"``, logits of
question and special tokens set to -10000 (CLS kept in the softmax, then zeroed),
score = P(start) x P(end), answers at most ``max_answer_len`` tokens, expanded to whole
words. A one-window document therefore gets exactly the pipeline's answer.

Long documents: context windows of ``max_seq_len`` minus the longest question, overlapping
by ``doc_stride`` tokens (handler params, the pipeline's defaults 384 and 128); the best
span over all windows wins. An answer whose score is below ``min_score`` is null (its
score is still reported).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from docbatch.worker.chunking import Chunk
from docbatch.worker.handlers.base import Output
from docbatch.worker.handlers.heads import HeadHandler, overlapping_chunks, to_numpy

MAX_ANSWER_LEN = 15
CANDIDATES = 12  # the pipeline's over-fetch for top_k=1 with word alignment (2 * 1 + 10)


class AskHandler(HeadHandler):
    task = "ask"
    default_model = "distilbert/distilbert-base-cased-distilled-squad"
    default_revision = "564e9b5"  # the revision transformers' own pipeline default pinned
    auto_class = "AutoModelForQuestionAnswering"
    arch_suffix = "ForQuestionAnswering"

    @property
    def max_seq_len(self) -> int:
        limit = min(int(getattr(self.tokenizer, "model_max_length", 512) or 512), 100_000)
        return int(self.config.params.get("max_seq_len", 0)) or min(limit, 384)

    @property
    def doc_stride(self) -> int:
        return int(self.config.params.get("doc_stride", 0)) or min(self.max_seq_len // 2, 128)

    def _context_tokens(self, questions: list[str]) -> int:
        longest = max(
            len(self.tokenizer(q, add_special_tokens=False)["input_ids"]) for q in questions
        )
        specials = len(self.tokenizer("", "", add_special_tokens=True)["input_ids"])
        return self.max_seq_len - longest - specials

    def check_params(self, params: dict[str, Any]) -> None:
        super().check_params(params)
        from docbatch.schema.errors import PermanentError

        room = self._context_tokens(list(params["questions"]))
        if room < 16:
            raise PermanentError(
                f"the longest question leaves {room} tokens of context in a "
                f"{self.max_seq_len}-token window; shorten the questions or raise "
                "DOCBATCH_MODELS__ASK__PARAMS max_seq_len"
            )

    def chunk_for(self, text: str, params: dict[str, Any]) -> list[Chunk]:
        room = self._context_tokens(list(params["questions"]))
        return overlapping_chunks(text, self.tokenizer, room, min(self.doc_stride, room // 2))

    def describe_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            **self.config.params,
            "min_score": 0.0,
            "max_answer_len": MAX_ANSWER_LEN,
            **params,
            "max_seq_len": self.max_seq_len if self.model is not None else None,
            "doc_stride": self.doc_stride if self.model is not None else None,
        }

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        questions = list(params["questions"])
        max_len = int(params.get("max_answer_len", MAX_ANSWER_LEN))
        pairs = [(q, c) for c in chunks for q in questions]
        # Rows are chunks x questions: keep each forward pass within the token budget.
        step = max(1, self.batch_budget // self.max_seq_len)
        found: list[list[tuple[int, int, float]]] = []
        for i in range(0, len(pairs), step):
            found.extend(self._spans(pairs[i : i + step], max_len))
        n = len(questions)
        return [found[k * n : (k + 1) * n] for k in range(len(chunks))]

    def _spans(
        self, pairs: list[tuple[str, str]], max_answer_len: int
    ) -> list[list[tuple[int, int, float]]]:
        """Candidate (start char, end char, score) per pair, best first, in context chars."""
        enc = self.tokenizer(
            [q for q, _ in pairs],
            [c for _, c in pairs],
            padding=True,
            truncation="only_second",
            max_length=self.max_seq_len,
            return_tensors="pt",
            return_offsets_mapping=True,
        )
        out = self.forward(enc)
        starts, ends = to_numpy(out.start_logits), to_numpy(out.end_logits)
        mask = enc["attention_mask"].numpy()
        ids = enc["input_ids"].numpy()
        result = []
        for row in range(len(pairs)):
            seq = enc.sequence_ids(row)
            p_mask = np.array([s != 1 for s in seq], dtype=np.int64)
            if self.tokenizer.cls_token_id is not None:
                p_mask[ids[row] == self.tokenizer.cls_token_id] = 0  # CLS may answer "none"
            s_idx, e_idx, scores = _select(
                starts[row], ends[row], p_mask, mask[row], CANDIDATES, max_answer_len
            )
            encoding = enc.encodings[row]
            result.append(
                [
                    (*_word_chars(encoding, int(s), int(e)), float(score))
                    for s, e, score in zip(s_idx, e_idx, scores, strict=True)
                ]
            )
        return result

    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        threshold = float(params.get("min_score", 0.0))
        answers = []
        for qi, question in enumerate(params["questions"]):
            merged: list[dict[str, Any]] = []
            by_text: dict[str, dict[str, Any]] = {}
            for chunk, per_q in zip(chunks, outputs, strict=True):
                for s, e, score in per_q[qi]:
                    start, end = chunk.start + s, chunk.start + e
                    key = text[start:end].lower()
                    if key in by_text:  # the pipeline sums candidates with the same text
                        by_text[key]["score"] += score
                    else:
                        by_text[key] = {"start": start, "end": end, "score": score}
                        merged.append(by_text[key])
            best = max(merged, key=lambda a: a["score"], default=None)
            if best is None or best["score"] < threshold:
                answers.append(
                    {
                        "question": question,
                        "text": None,
                        "start": None,
                        "end": None,
                        "score": float(best["score"]) if best else 0.0,
                    }
                )
                continue
            answers.append(
                {
                    "question": question,
                    "text": text[best["start"] : best["end"]],
                    "start": best["start"],
                    "end": best["end"],
                    "score": float(best["score"]),
                }
            )
        return Output({"answers": answers, "chunks": len(chunks)})


def _select(
    start: np.ndarray,
    end: np.ndarray,
    p_mask: np.ndarray,
    attention_mask: np.ndarray,
    top_k: int,
    max_answer_len: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pipeline's ``select_starts_ends`` + ``decode_spans`` for one window."""
    allowed = np.abs(p_mask - 1) & attention_mask
    blocked = allowed == 0
    start = np.where(blocked, -10000.0, start)
    end = np.where(blocked, -10000.0, end)
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    start[0] = end[0] = 0.0
    outer = np.matmul(start[:, None], end[None, :])
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    flat = candidates.flatten()
    if top_k == 1:
        order = np.array([np.argmax(flat)])
    elif len(flat) < top_k:
        order = np.argsort(-flat)
    else:
        idx = np.argpartition(-flat, top_k)[0:top_k]
        order = idx[np.argsort(-flat[idx])]
    s_idx, e_idx = np.unravel_index(order, candidates.shape)
    ok = np.isin(s_idx, allowed.nonzero()) & np.isin(e_idx, allowed.nonzero())
    s_idx, e_idx = s_idx[ok], e_idx[ok]
    return s_idx, e_idx, candidates[s_idx, e_idx]


def _word_chars(enc: Any, s: int, e: int) -> tuple[int, int]:
    """Token span -> context character span, expanded to whole words (``align_to_words``)."""
    try:
        start = enc.word_to_chars(enc.token_to_word(s), sequence_index=1)[0]
        stop = enc.word_to_chars(enc.token_to_word(e), sequence_index=1)[1]
    except Exception:  # tokenizers without words: token offsets, as the pipeline
        start, stop = enc.offsets[s][0], enc.offsets[e][1]
    return int(start), int(stop)
