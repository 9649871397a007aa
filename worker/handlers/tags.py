"""tags: the caller's labels ranked by embedding similarity, or keyphrases from the text.

Labels: each label is embedded once; a document's score for a label is the best
cosine similarity over its chunks (a label that fits any part of the document
fits the document). Keyphrases: candidate words and two/three-word phrases
without stopwords are ranked by similarity to the pooled document vector
(KeyBERT's idea), with near-duplicates dropped. With an NLI model configured
(``worker.handlers.zeroshot``), labels are scored by zero-shot entailment instead, and
the similarity is kept beside it.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np

from worker.chunking import Chunk
from worker.handlers.base import Output
from worker.handlers.minilm import SentenceEncoderHandler, pooled
from worker.handlers.zeroshot import load_nli

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

    def setup(self, device: str) -> None:
        super().setup(device)
        self._label_cache: dict[str, np.ndarray] = {}
        self.nli = load_nli(self.config.params, device, self.config.dtype)

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
                nli = self.nli.scores([c.text for c in chunks], labels).max(axis=0)
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
        vecs = self.encode(phrases)
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
