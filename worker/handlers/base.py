"""The handler contract: how a task's model is loaded, fed and reduced.

A handler is LitServe-shaped: ``setup(device)`` loads weights once per worker
process; ``predict(chunks, params)`` maps a batch of chunk texts to exactly one
output each; ``chunk(text)`` cuts a document with the model's own tokenizer;
``reduce(...)`` folds one document's chunk outputs into its result. Example::

    class Upper(Handler):
        task = "summarize"

        def setup(self, device: str) -> None:
            self.tokenizer = MyTokenizer()

        def predict(self, chunks, params):
            return [c.upper() for c in chunks]

        def reduce(self, text, chunks, outputs, params):
            return Output({"summary": "".join(outputs)})

Raise ``docbatch.schema.errors.PermanentError`` to fail a document with a reason.

Handlers whose chunks need different model settings within one unit (translate:
one language pair per document) give each chunk a ``group``; the runner batches
each group on its own and passes the group to ``predict`` as ``params[GROUP_PARAM]``.
Which model made a result is ``result_model(params, text)``: the result row records
it and result reuse (domain/reuse.py) looks earlier results up by it, so the two can
never disagree. A handler whose model depends on the job's params overrides
``model_for``; one whose model depends on the document (translate: the detected
language pair) overrides ``result_model``.

A handler that needs a second model pass after ``predict`` (tags encodes keyphrase
candidates) overrides ``prepare_reduce(docs, params)``: the runner calls it once per
unit, with every document whose chunks all succeeded, before calling ``reduce`` for
each of them. It batches the second pass across the unit (token budget, each distinct
input once) and keeps what ``reduce`` needs; ``reduce`` must still work without it
(the runner goes on to ``reduce`` if ``prepare_reduce`` raises, so a bad document
fails alone there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from docbatch.schema.errors import BatchLengthMismatch
from docbatch.schema.settings import ModelConfig
from docbatch.worker.chunking import Chunk, chunk_text


@dataclass
class Output:
    """One document's result: JSON-able ``data`` plus optional float32 ``vectors``."""

    data: dict[str, Any]
    vectors: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


GROUP_PARAM = "_group"
GPU_BATCH_TOKENS = 16384  # text-embeddings-inference's default max-batch-tokens
CPU_BATCH_TOKENS = 4096


@dataclass
class UnitDocument:
    """One document of a unit as ``prepare_reduce`` sees it: what ``reduce`` will get."""

    text: str
    chunks: list[Chunk]
    outputs: list[Any]


class Handler:
    task: ClassVar[str] = ""
    default_model: ClassVar[str] = ""
    default_revision: ClassVar[str] = "main"
    # Whether the subclass keeps the default chunker (then the runner tokenizes a whole
    # unit in one call); decided once, when the handler class is defined.
    default_chunker: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.default_chunker = cls.chunk is Handler.chunk and cls.chunk_for is Handler.chunk_for

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.model_id = config.model or self.default_model
        self.revision = (
            config.revision if config.model else self.default_revision
        ) or self.default_revision
        self.device = "cpu"
        self.tokenizer: Any = None
        # The deployment this handler serves (docbatch.worker.registry sets it): the key
        # of its units and results; a task's default deployment is named after the task.
        self.deployment: str = self.task
        self.siblings: list[str] = [self.task]

    # -- to implement -----------------------------------------------------------------
    def setup(self, device: str) -> None:
        """Load the model and tokenizer onto ``device``; called once per worker process."""
        raise NotImplementedError

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        """One output per chunk, in order."""
        raise NotImplementedError

    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        """Fold one document's chunk outputs (in document order) into its result."""
        raise NotImplementedError

    # -- optional -----------------------------------------------------------------------
    def prepare_reduce(self, docs: list[UnitDocument], params: dict[str, Any]) -> None:
        """Before a unit's ``reduce`` calls: one batched pass over all its documents.

        The default does nothing. Whatever it computes must leave ``reduce``'s result
        for a document the same as ``reduce`` alone would give (only faster).
        """

    # -- defaults ---------------------------------------------------------------------
    @property
    def batch_budget(self) -> int:
        """Padded tokens per batch: the configured budget, else one that suits the device."""
        if self.config.batch_tokens:
            return self.config.batch_tokens
        return GPU_BATCH_TOKENS if self.device.startswith("cuda") else CPU_BATCH_TOKENS

    def batch_cost(self, params: dict[str, Any]) -> int | None:
        """What one more batch costs for a job with ``params``, in padded tokens, for
        ``plan_batches`` to weigh against padding; None fills every batch to the budget
        (right for generators, which pay each decode step per batch)."""
        return None

    @property
    def max_input_tokens(self) -> int:
        """Tokens per chunk, special tokens excluded."""
        if self.config.max_input_tokens:
            return self.config.max_input_tokens
        limit = int(getattr(self.tokenizer, "model_max_length", 512) or 512)
        if limit > 100_000:  # tokenizers without a limit report a huge sentinel
            limit = 512
        return limit - self.special_tokens()

    def special_tokens(self) -> int:
        # Asked for every chunk (``max_input_tokens``): counted once per tokenizer.
        known = self.__dict__.get("_special_tokens")
        if known is None or known[0] is not self.tokenizer:
            known = (self.tokenizer, len(self.tokenizer("", add_special_tokens=True)["input_ids"]))
            self._special_tokens = known
        return int(known[1])

    def chunk(self, text: str) -> list[Chunk]:
        return chunk_text(text, self.tokenizer, self.max_input_tokens)

    def chunk_for(self, text: str, params: dict[str, Any]) -> list[Chunk]:
        """What the runner calls: chunks of ``text`` for this job's ``params``."""
        return self.chunk(text)

    def model_for(self, params: dict[str, Any]) -> tuple[str, str]:
        """(model id, revision) that serves a job with ``params``."""
        return self.model_id, self.revision

    def result_model(self, params: dict[str, Any], text: str | None = None) -> tuple[str, str]:
        """(model id, revision) that makes the result of ``text`` with ``params``: recorded
        on its result row and matched when results are reused. Must not load a model or
        raise (it runs while a unit is being claimed)."""
        return self.model_for(params)

    def hub_models(self) -> list[tuple[str, str]]:
        """(hub id, revision) of every model ``setup`` loads from the hub: what ``docbatch
        models fill`` downloads into the cache the workers read offline. A local path, and
        a model bundled with the install, is not listed."""
        return [(self.model_id, self.revision)] if is_hub_id(self.model_id) else []

    def check_params(self, params: dict[str, Any]) -> None:
        """Raise PermanentError if this handler cannot serve ``params`` at all."""

    def describe_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters recorded on each result (task params plus model defaults)."""
        return {**self.config.params, **params}

    def run_batch(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        outputs = self.predict(chunks, params)
        if len(outputs) != len(chunks):
            raise BatchLengthMismatch(
                f"{type(self).__name__}.predict returned {len(outputs)} outputs "
                f"for {len(chunks)} inputs"
            )
        return outputs


def is_hub_id(model: str) -> bool:
    """Whether ``model`` names a hub repository (``org/name`` or ``name``), not a folder."""
    if not model or model.startswith(("/", ".", "~")) or "{" in model:
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", model) is not None and not (
        Path(model).exists()
    )


def pick_device(configured: str) -> str:
    if configured != "auto":
        return configured
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
