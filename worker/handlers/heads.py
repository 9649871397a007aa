"""Encoder heads (sequence classification, token classification, question answering):
loading, the architecture check, the forward pass and the fp32 softmax shared by classify,
entities and ask.

A head is any ``from_pretrained`` id or local directory whose config names an
architecture of the right kind (``...ForSequenceClassification`` and so on). A model
that is missing, or of the wrong kind, does not stop the worker: ``setup`` keeps the
reason and every document of the task fails with it, naming the setting to change::

    DOCBATCH_MODELS__ENTITIES__MODEL=/models/bert-base-NER docbatch worker --task entities
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from docbatch.schema.errors import ModelUnavailable
from docbatch.worker.chunking import Chunk
from docbatch.worker.handlers.base import Handler
from docbatch.worker.handlers.seq2seq import torch_dtype


def load_head(
    auto_class: str,
    arch_suffix: str,
    path: str,
    revision: str | None,
    device: str,
    dtype: str,
    setting: str,
) -> tuple[Any, Any]:
    """(fast tokenizer, model in eval mode) or ModelUnavailable saying what to change."""
    import transformers

    kw: dict[str, Any] = {"revision": revision or None}
    what = f"an {auto_class} model (architecture *{arch_suffix})"
    try:
        config = transformers.AutoConfig.from_pretrained(path, **kw)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(
            f"cannot load model {path!r}: {exc}. Download it where the worker can read it "
            f"(`hf download {path}`) or set {setting} to a local directory holding {what}"
        ) from None
    archs = list(getattr(config, "architectures", None) or [])
    # from_pretrained would load any encoder with a fresh random head: refuse that.
    if not any(a.endswith(arch_suffix) for a in archs):
        raise ModelUnavailable(
            f"{path} is a {', '.join(archs) or config.model_type} model, not {what}; "
            f"set {setting} to such a model"
        )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, **kw)
        model = getattr(transformers, auto_class).from_pretrained(
            path, dtype=torch_dtype(dtype, device), **kw
        )
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"cannot load {path!r} ({exc}); set {setting}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelUnavailable(
            f"{path} has no fast tokenizer (tokenizer.json); character offsets need one. "
            f"Set {setting} to a model with a fast tokenizer"
        )
    return tokenizer, model.to(device).eval()


class HeadHandler(Handler):
    """A Handler on one encoder head. Subclasses set ``auto_class`` and ``arch_suffix``."""

    auto_class: ClassVar[str] = ""
    arch_suffix: ClassVar[str] = ""

    @property
    def setting(self) -> str:
        return f"DOCBATCH_MODELS__{self.task.upper()}__MODEL"

    def setup(self, device: str) -> None:
        self.device = device
        self.load_error = ""
        self.model: Any = None
        self.model_inputs: set[str] = set()
        try:
            self.tokenizer, self.model = load_head(
                self.auto_class,
                self.arch_suffix,
                self.model_id,
                self.revision,
                device,
                self.config.dtype,
                self.setting,
            )
        except ModelUnavailable as exc:
            # The worker stays up; each document fails with the reason (check_params).
            self.load_error = str(exc)
            return
        self.model_inputs = accepted_inputs(self.model)

    def check_params(self, params: dict[str, Any]) -> None:
        if self.load_error:
            raise ModelUnavailable(self.load_error)

    @property
    def id2label(self) -> dict[int, str]:
        return {int(k): str(v) for k, v in self.model.config.id2label.items()}

    def forward(self, enc: Any) -> Any:
        """The model's output on a tokenizer batch (only the inputs its forward takes);
        ``to_numpy`` turns logits into float32, as the pipelines do before a softmax."""
        import torch

        inputs = {k: v.to(self.device) for k, v in enc.items() if k in self.model_inputs}
        with torch.inference_mode():
            return self.model(**inputs)


def accepted_inputs(model: Any) -> set[str]:
    """Tokenizer outputs the model's forward takes (DistilBERT has no token_type_ids)."""
    import inspect

    names = set(inspect.signature(model.forward).parameters)
    return {"input_ids", "attention_mask", "token_type_ids"} & names


def to_numpy(t: Any) -> np.ndarray:
    return np.asarray(t.float().cpu().numpy(), dtype=np.float32)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """transformers' pipeline softmax (max-shifted, in numpy)."""
    maxes = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - maxes)
    return np.asarray(e / e.sum(axis=axis, keepdims=True))


def overlapping_chunks(text: str, tokenizer: Any, limit: int, stride: int) -> list[Chunk]:
    """Token windows of at most ``limit`` tokens, each overlapping the previous one by about
    ``stride`` tokens, starting and ending on word boundaries (a fast tokenizer's word ids).
    The first window starts at 0 and the last ends at ``len(text)``, so every character is in
    some window. A text of at most ``limit`` tokens is one chunk: the text itself."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets: list[tuple[int, int]] = enc["offset_mapping"]
    words = enc.word_ids()
    n = len(offsets)
    if n <= limit:
        return [Chunk(0, len(text), text, n)]

    def word_start(i: int, floor: int) -> int:
        while i > floor + 1 and words[i] is not None and words[i] == words[i - 1]:
            i -= 1
        return i

    windows: list[tuple[int, int]] = []
    a = 0
    while True:
        b = min(a + limit, n)
        if b < n:
            b = word_start(b, a)  # end before a word the limit would cut
        windows.append((a, b))
        if b >= n:
            break
        a = max(word_start(b - stride, a), a + 1)
    chunks = []
    for k, (a, b) in enumerate(windows):
        s = 0 if k == 0 else offsets[a][0]
        e = len(text) if k == len(windows) - 1 else offsets[b - 1][1]
        chunks.append(Chunk(s, e, text[s:e], b - a))
    return chunks
