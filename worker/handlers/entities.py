"""entities: named entities from any token-classification model, in whole-document offsets.

Scoring and aggregation (``simple | first | average | max``) follow transformers'
token-classification pipeline line by line (``postprocess``, ``gather_pre_entities``,
``aggregate*``, ``group_entities``; ``ignore_labels=["O"]``), so a one-chunk document
gives exactly the pipeline's entities.

Long documents are cut into token windows that overlap by ``stride`` tokens (handler
param, default a quarter of the model's limit), starting and ending on word boundaries.
Each window is scored on its own and its offsets are shifted by the window's start in the
document. An entity touching a window edge inside the document may be cut there, so it is
dropped in favour of the neighbouring window's view, which holds the whole entity when it
is shorter than the overlap. The views that remain are merged as the pipeline does with
``stride``: sorted by start, of overlapping entities the longer one wins (on a tie the
higher score), so an entity seen by two windows is reported once.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from docbatch.worker.chunking import Chunk
from docbatch.worker.handlers.base import Output
from docbatch.worker.handlers.heads import HeadHandler, overlapping_chunks, softmax, to_numpy

STRATEGIES = ("simple", "first", "average", "max")


class EntitiesHandler(HeadHandler):
    task = "entities"
    default_model = "dslim/bert-base-NER"
    # A commit of the hub repository with safetensors weights; `docbatch models fill` fetches it.
    default_revision = "d1a3e8f13f8c3566299d95fcfc9a8d2382a9affc"
    auto_class = "AutoModelForTokenClassification"
    arch_suffix = "ForTokenClassification"

    def stride(self) -> int:
        wanted = int(self.config.params.get("stride", 0)) or self.max_input_tokens // 4
        return max(1, min(wanted, self.max_input_tokens // 2))

    def chunk_for(self, text: str, params: dict[str, Any]) -> list[Chunk]:
        return overlapping_chunks(text, self.tokenizer, self.max_input_tokens, self.stride())

    def describe_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**self.config.params, "aggregation": "simple", **params}

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        strategy = str(params.get("aggregation", "simple"))
        enc = self.tokenizer(
            chunks,
            padding=True,
            truncation=True,
            return_tensors="pt",
            return_special_tokens_mask=True,
            return_offsets_mapping=True,
        )
        # One softmax and one conversion per batch and arrays per row, not Python per
        # token: the pipeline's per-token post-processing cost about 15 % of the model's
        # own time (BENCHMARKS.md, "entities efficiency").
        scores = softmax(to_numpy(self.forward(enc).logits))
        tokens = enc["attention_mask"].numpy().astype(bool) & ~enc[
            "special_tokens_mask"
        ].numpy().astype(bool)
        ids = enc["input_ids"].numpy()
        offsets = enc["offset_mapping"].numpy()
        out = []
        for row, text in enumerate(chunks):
            keep = np.flatnonzero(tokens[row])
            if strategy == "simple":
                out.append(self._simple(scores[row, keep], offsets[row, keep]))
                continue
            pre = self._pre_entities(text, ids[row, keep], scores[row, keep], offsets[row, keep])
            grouped = self._aggregate(pre, strategy)
            out.append([e for e in grouped if e["label"] != "O"])
        return out

    def _labels(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Per label id: its entity group (``B-PER`` -> ``PER``), its tag id (the
        pipeline's ``get_tag``: labels continue a run when their tags are equal) and
        whether it begins a run (``B-``)."""
        cached = getattr(self, "_label_table", None)
        if cached is None:
            labels = self.id2label
            names = [labels[i] for i in range(max(labels) + 1)]
            tags = [_tag(n)[1] for n in names]
            tag_ids = {t: k for k, t in enumerate(dict.fromkeys(tags))}
            cached = (
                [n.split("-", 1)[-1] for n in names],
                np.array([tag_ids[t] for t in tags], dtype=np.int64),
                np.array([_tag(n)[0] == "B" for n in names], dtype=bool),
            )
            self._label_table = cached
        return cached

    def _simple(self, scores: np.ndarray, offsets: np.ndarray) -> list[dict[str, Any]]:
        """``aggregation="simple"`` on one chunk's tokens, as arrays: each token takes its
        best label, adjacent tokens of one tag form an entity (``B-`` starts a new one),
        scored by the mean of its tokens' scores; the ``O`` runs are dropped."""
        if not len(scores):
            return []
        groups, tag_of, begins = self._labels()
        best = scores.argmax(axis=-1)
        score = np.take_along_axis(scores, best[:, None], axis=-1)[:, 0]
        tag = tag_of[best]
        new = np.ones(len(best), dtype=bool)
        new[1:] = (tag[1:] != tag[:-1]) | begins[best[1:]]
        first = np.flatnonzero(new)
        last = np.append(first[1:], len(best)) - 1
        if np.isnan(score).any():  # the pipeline's nanmean, run by run
            means = [float(np.nanmean(score[a : b + 1])) for a, b in zip(first, last, strict=True)]
        else:
            means = (np.add.reduceat(score, first) / (last - first + 1)).tolist()
        starts = offsets[first, 0].tolist()
        ends = offsets[last, 1].tolist()
        return [
            {"label": label, "score": m, "start": s, "end": e}
            for label, m, s, e in zip(
                [groups[i] for i in best[first].tolist()], means, starts, ends, strict=True
            )
            if label != "O"
        ]

    # -- transformers' token-classification post-processing -------------------------
    def _pre_entities(
        self, text: str, ids: np.ndarray, scores: np.ndarray, offsets: np.ndarray
    ) -> list[dict[str, Any]]:
        """The pipeline's ``gather_pre_entities`` on one chunk's tokens (special tokens
        already left out)."""
        backend = getattr(self.tokenizer, "_tokenizer", None)
        word_aware = bool(backend and getattr(backend.model, "continuing_subword_prefix", None))
        unk = self.tokenizer.unk_token_id
        id_list = ids.tolist()
        words = self.tokenizer.convert_ids_to_tokens(id_list)
        pre = []
        for idx, (token_id, word, (start, end)) in enumerate(
            zip(id_list, words, offsets.tolist(), strict=True)
        ):
            ref = text[start:end]
            if word_aware:
                is_subword = len(word) != len(ref)
            else:
                is_subword = start > 0 and " " not in text[start - 1 : start + 1]
            if token_id == unk:
                word, is_subword = ref, False
            pre.append(
                {
                    "word": word,
                    "scores": scores[idx],
                    "start": start,
                    "end": end,
                    "is_subword": is_subword,
                }
            )
        return pre

    def _aggregate(self, pre: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
        """``first | average | max``: the pipeline's words (subword tokens fused), then
        its grouping (``simple`` is ``_simple``)."""
        labels = self.id2label
        tagged: list[dict[str, Any]] = []
        group: list[dict[str, Any]] = []
        for p in pre:
            if group and not p["is_subword"]:
                tagged.append(_word(group, strategy, labels))
                group = []
            group.append(p)
        if group:
            tagged.append(_word(group, strategy, labels))
        return _group(tagged)

    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        found = self._views(chunks, outputs)
        entities = [
            {
                "text": text[e["start"] : e["end"]],
                "label": e["label"],
                "start": e["start"],
                "end": e["end"],
                "score": float(e["score"]),
            }
            for e in found
        ]
        groups: dict[str, Counter[str]] = {}
        for e in entities:
            groups.setdefault(e["label"], Counter())[e["text"]] += 1
        return Output(
            {
                "entities": entities,
                "groups": {
                    label: [{"text": t, "count": n} for t, n in counts.most_common()]
                    for label, counts in sorted(groups.items())
                },
                "aggregation": str(params.get("aggregation", "simple")),
                "chunks": len(chunks),
            }
        )

    def _views(self, chunks: list[Chunk], outputs: list[Any]) -> list[dict[str, Any]]:
        """The document's entities in document offsets, each seen once (module docstring)."""
        if len(chunks) == 1 and chunks[0].start == 0:  # one window: no edge inside the text
            return _merge_overlapping(outputs[0])
        whole: list[dict[str, Any]] = []
        cut: list[dict[str, Any]] = []
        last = len(chunks) - 1
        for k, (chunk, ents) in enumerate(zip(chunks, outputs, strict=True)):
            for e in ents:
                start, end = e["start"] + chunk.start, e["end"] + chunk.start
                # Against a window edge inside the document the entity may go on past it;
                # a neighbouring window that overlaps this edge sees it whole.
                left = k > 0 and start <= chunk.start
                right = k < last and end >= chunk.end
                view = {**e, "start": start, "end": end}
                if not (left or right):
                    whole.append(view)
                # Shorter than the overlap, the neighbour saw it whole and had the last
                # word on it (more context): keep this view only when it is longer.
                elif (left and end > chunks[k - 1].end) or (right and start < chunks[k + 1].start):
                    cut.append(view)
        found = _merge_overlapping(whole)
        # An entity longer than the overlap is whole in no window: keep its longest view.
        longest = [c for c in _merge_overlapping(cut) if not any(_overlap(c, f) for f in found)]
        if longest:
            found = _merge_overlapping(found + longest)
        return found


def _word(tokens: list[dict[str, Any]], strategy: str, labels: dict[int, str]) -> dict[str, Any]:
    if strategy == "first":
        scores = tokens[0]["scores"]
        i = int(scores.argmax())
        score = scores[i]
    elif strategy == "max":
        scores = max(tokens, key=lambda t: t["scores"].max())["scores"]
        i = int(scores.argmax())
        score = scores[i]
    else:  # average
        mean = np.nanmean(np.stack([t["scores"] for t in tokens]), axis=0)
        i = int(mean.argmax())
        score = mean[i]
    return {
        "entity": labels[i],
        "score": score,
        "start": tokens[0]["start"],
        "end": tokens[-1]["end"],
    }


def _tag(name: str) -> tuple[str, str]:
    if name.startswith("B-"):
        return "B", name[2:]
    if name.startswith("I-"):
        return "I", name[2:]
    return "I", name


def _group(tagged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adjacent tokens/words with the same tag become one entity (B- starts a new one)."""
    out: list[dict[str, Any]] = []
    run: list[dict[str, Any]] = []

    def close() -> None:
        out.append(
            {
                "label": run[0]["entity"].split("-", 1)[-1],
                "score": float(np.nanmean([t["score"] for t in run])),
                "start": run[0]["start"],
                "end": run[-1]["end"],
            }
        )

    for t in tagged:
        if run:
            bi, tag = _tag(t["entity"])
            _, last = _tag(run[-1]["entity"])
            if not (tag == last and bi != "B"):
                close()
                run = []
        run.append(t)
    if run:
        close()
    return out


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["start"] < b["end"] and b["start"] < a["end"])


def _merge_overlapping(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pipeline's rule for overlapping windows: sorted by start, the longer one wins
    (on a tie, the higher score)."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda e: e["start"])
    out = []
    prev = entities[0]
    for e in entities:
        if prev["start"] <= e["start"] < prev["end"]:
            longer = e["end"] - e["start"] > prev["end"] - prev["start"]
            tie = e["end"] - e["start"] == prev["end"] - prev["start"]
            if longer or (tie and e["score"] > prev["score"]):
                prev = e
        else:
            out.append(prev)
            prev = e
    out.append(prev)
    return out
