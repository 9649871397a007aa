"""translate: MarianMT per language pair (abstractive models arrive with the model registry).

With no translation model installed, every document fails with a reason naming
the model to install; the worker keeps running.
"""

from __future__ import annotations

from typing import Any

from schema.errors import ModelUnavailable
from worker.chunking import Chunk
from worker.handlers.base import Handler, Output


class TranslateHandler(Handler):
    task = "translate"
    default_model = "Helsinki-NLP/opus-mt-{src}-{tgt}"

    def setup(self, device: str) -> None:
        self.device = device

    def model_name(self, params: dict[str, Any]) -> str:
        src = params.get("source_lang") or "en"
        return self.default_model.format(src=src, tgt=params["target_lang"])

    def chunk(self, text: str) -> list[Chunk]:
        return [Chunk(0, len(text), text, 0)]

    def check_params(self, params: dict[str, Any]) -> None:
        name = self.model_name(params)
        raise ModelUnavailable(
            f"no translation model for {params.get('source_lang') or 'en'}->"
            f"{params['target_lang']} is installed; install {name} and set "
            "DOCBATCH_MODELS__TRANSLATE__MODEL to its path"
        )

    def predict(self, chunks: list[str], params: dict[str, Any]) -> list[Any]:
        raise ModelUnavailable("translation model not loaded")

    def reduce(
        self, text: str, chunks: list[Chunk], outputs: list[Any], params: dict[str, Any]
    ) -> Output:
        return Output({"translation": "".join(outputs)})
