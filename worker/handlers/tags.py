"""tags: the caller's labels ranked by embedding similarity, or keyphrases from the text.

Labels: each label is embedded once; a document's score for a label is the best
cosine similarity over its chunks (a label that fits any part of the document
fits the document). Keyphrases: candidate words and two/three-word phrases
without stopwords are ranked by similarity to the pooled document vector
(KeyBERT's idea), with near-duplicates dropped. The candidates of a whole unit are
encoded together before its documents are reduced (``prepare_reduce``): each distinct
phrase once, in token-budget batches, rather than 64 phrases per document; a bounded
per-worker cache keeps phrases that recur across units from being encoded again. With
an NLI model configured (``docbatch.worker.handlers.zeroshot``), labels are scored by zero-shot
entailment instead (all of a unit's pairs batched together), and the similarity is
kept beside it.
"""

from __future__ import annotations

import re
from collections import Counter, OrderedDict
from typing import Any

import numpy as np

from docbatch.worker.chunking import Chunk
from docbatch.worker.handlers.base import Output, UnitDocument
from docbatch.worker.handlers.minilm import SentenceEncoderHandler, pooled
from docbatch.worker.handlers.zeroshot import load_nli, nli_hub_models

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{2,}")
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can cannot could did do does doing down during each either
    else ever every few for from further had has have having he her here hers herself him
    himself his how however if in into is it its itself just least less like made make many
    may me might more most much must my myself never no nor not now of off often on once one
    only or other others otherwise our ours ourselves out over own per rather same shall she
    should since so some such than that the their theirs them themselves then there these they
    this those though through thus to too under until up upon us used uses using very via was
    we well were what when where whether which while who whom whose why will with within
    without would yet you your yours yourself yourselves true false none return returns
    default given value values see new use get set""".split()  # noqa: SIM905
)
MAX_CANDIDATES = 64
# Keyphrase vectors a tags worker keeps (least recently used dropped first): about
# 1.5 kB each for MiniLM, so ~50 MB. Params key "phrase_cache"; 0 turns it off.
PHRASE_CACHE = 32_768


def candidate_phrases(text: str, limit: int = MAX_CANDIDATES) -> list[str]:
    words = [w.lower() for w in _WORD.findall(text)]
    counts: Counter[str] = Counter()
    for n in (1, 2, 3):
        for i in range(len(words) - n + 1):
            gram = words[i : i + n]
            if gram[0] in STOPWORDS or gram[-1] in STOPWORDS:
                continue
            if any(g.isdigit() for g in gram):
                continue
            counts[" ".join(gram)] += 1
    return [p for p, _ in counts.most_common(limit)]


class TagsHandler(SentenceEncoderHandler):
    task = "tags"

    def hub_models(self) -> list[tuple[str, str]]:
        return super().hub_models() + nli_hub_models(self.config.params)

    def setup(self, device: str) -> None:
        super().setup(device)
        self._label_cache: dict[str, np.ndarray] = {}
        self.nli = load_nli(self.config.params, device, self.config.dtype)
        # Keyphrase vectors: a per-worker LRU (phrases recur across a corpus's units) and
        # the current unit's vectors, which reduce reads (kept apart so a unit with more
        # distinct phrases than the LRU holds still finds all of its own).
        self.phrase_cache_size = int(self.config.params.get("phrase_cache", PHRASE_CACHE))
        self._phrase_lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._unit_phrases: dict[str, np.ndarray] = {}
        # NLI scores of the current unit's documents: (labels, text) -> [chunks, labels].
        self._unit_nli: dict[tuple[tuple[str, ...], str], np.ndarray] = {}

    def clear_phrase_cache(self) -> None:
        self._phrase_lru.clear()
        self._unit_phrases, self._unit_nli = {}, {}

    def prepare_reduce(self, docs: list[UnitDocument], params: dict[str, Any]) -> None:
        """Encode the unit's keyphrase candidates in one batched pass, each phrase once."""
        self._unit_phrases, self._unit_nli = {}, {}
        labels = params.get("labels")
        if labels:
            if self.nli is not None:
                self._prepare_nli(docs, list(labels))
            return
        distinct = list(dict.fromkeys(p for d in docs for p in candidate_phrases(d.text)))
        self._unit_phrases = self._lookup(distinct, batched=True)

    def _prepare_nli(self, docs: list[UnitDocument], labels: list[str]) -> None:
        """Every (chunk, label) pair of the unit scored in one batched pass."""
        assert self.nli is not None
        texts = [c.text for d in docs for c in d.chunks]
        scores = self.nli.scores_batched(
            texts, labels, self.batch_budget, self.config.max_batch_rows
        )
        start = 0
        for d in docs:
            self._unit_nli[(tuple(labels), d.text)] = scores[start : start + len(d.chunks)]
            start += len(d.chunks)

    def _lookup(self, phrases: list[str], batched: bool) -> dict[str, np.ndarray]:
        """Vectors for distinct ``phrases``: the unit's, the LRU's, the rest encoded."""
        found: dict[str, np.ndarray] = {}
        missing: list[str] = []
        for p in phrases:
            vec = self._unit_phrases.get(p)
            if vec is None:
                vec = self._phrase_lru.get(p)
                if vec is not None:
                    self._phrase_lru.move_to_end(p)
            if vec is None:
                missing.append(p)
            else:
                found[p] = vec
        if missing:
            vecs = self.encode_batched(missing) if batched else self.encode(missing)
            for p, vec in zip(missing, vecs, strict=True):
                found[p] = vec
                if self.phrase_cache_size > 0:
                    self._phrase_lru[p] = vec
            while len(self._phrase_lru) > self.phrase_cache_size:
                self._phrase_lru.popitem(last=False)
        return found

    def _labels(self, labels: list[str]) -> np.ndarray:
        missing = [label for label in labels if label not in self._label_cache]
        if missing:
            for label, vec in zip(missing, self.encode(missing), strict=True):
                self._label_cache[label] = vec
        return np.stack([self._label_cache[label] for label in labels])

    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        top_k = int(params.get("top_k", 5))
        chunk_vecs = np.stack(outputs)
        labels = params.get("labels")
        if labels:
            scores = (chunk_vecs @ self._labels(labels).T).max(axis=0)
            if self.nli is not None:
                # A label holds for the document if some chunk entails it.
                pre = self._unit_nli.get((tuple(labels), text))
                if pre is None or len(pre) != len(chunks):
                    pre = self.nli.scores([c.text for c in chunks], labels)
                nli = pre.max(axis=0)
                tags = [
                    {"label": label, "score": round(float(n), 4), "similarity": round(float(s), 4)}
                    for label, n, s in zip(labels, nli, scores, strict=True)
                ]
                tags.sort(key=lambda t: -t["score"])
                return Output({"source": "labels+nli", "tags": tags[:top_k]})
            ranked = sorted(zip(labels, scores.tolist(), strict=True), key=lambda p: -p[1])
            return Output({"source": "labels", "tags": _as_tags(ranked[:top_k])})
        doc = pooled(outputs, [c.tokens for c in chunks])
        phrases = candidate_phrases(text)
        if not phrases:
            return Output({"source": "keyphrases", "tags": []})
        found = self._lookup(phrases, batched=False)
        vecs = np.stack([found[p] for p in phrases])
        scores = vecs @ doc
        order = np.argsort(-scores)
        chosen: list[int] = []
        for i in order:
            # Skip phrases nearly identical to one already chosen ("thread", "threads").
            if any(float(vecs[i] @ vecs[j]) > 0.85 for j in chosen):
                continue
            chosen.append(int(i))
            if len(chosen) == top_k:
                break
        ranked = [(phrases[i], float(scores[i])) for i in chosen]
        return Output({"source": "keyphrases", "tags": _as_tags(ranked)})


def _as_tags(ranked: list[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"label": label, "score": round(float(score), 4)} for label, score in ranked]
