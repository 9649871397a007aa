"""The model tasks, said once: each task's name, its default handler and its colour on the
dashboard (plain data, no imports, so the slim CLI can read it too).

Everything that lists tasks derives from ``TASK_KINDS``: ``TASKS`` (and through it the
queues, ``Settings.queue_for``), ``Settings.models``' defaults (each task's handler), the
CLI's ``--task`` help and checks, the dashboard's colours (api/routers/ui.py hands them to
app.js) and the config checker's known keys. The task-parameter union ``TaskSpec``
(schema/models.py) is a union of types, so it cannot be derived from a list: it is checked
against ``TASKS`` when the module loads, naming what is missing.

Adding a task: a line here, its parameter model in ``TaskSpec``, its handler in
``worker/handlers/``. Example::

    "sentiment": TaskKind("docbatch.worker.handlers.sentiment:SentimentHandler", "#c0392b"),
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskKind:
    handler: str  # "module:Class" of the handler a worker loads unless settings say otherwise
    color: str  # its colour in the dashboard's chips and chart


_HANDLERS = "docbatch.worker.handlers"

TASK_KINDS: dict[str, TaskKind] = {
    "summarize": TaskKind(f"{_HANDLERS}.summarize:SummarizeHandler", "#4f7cff"),
    "tags": TaskKind(f"{_HANDLERS}.tags:TagsHandler", "#18a07a"),
    "translate": TaskKind(f"{_HANDLERS}.translate:TranslateHandler", "#f0a020"),
    "embed": TaskKind(f"{_HANDLERS}.embed:EmbedHandler", "#b26bff"),
    # Hub ids pinned by revision (`docbatch models fill` downloads them; see
    # docs/concepts/models.md): classify distilbert-base-uncased-finetuned-sst-2-english,
    # entities dslim/bert-base-NER, ask distilbert-base-cased-distilled-squad, generate
    # Qwen/Qwen2.5-0.5B-Instruct.
    "classify": TaskKind(f"{_HANDLERS}.classify:ClassifyHandler", "#e0457b"),
    "entities": TaskKind(f"{_HANDLERS}.entities:EntitiesHandler", "#2bb3c0"),
    "ask": TaskKind(f"{_HANDLERS}.ask:AskHandler", "#8a6d3b"),
    "generate": TaskKind(f"{_HANDLERS}.generate:GenerateHandler", "#5c6bc0"),
}
TASKS: tuple[str, ...] = tuple(TASK_KINDS)
# The extract stage (files -> text) is no model task, but the dashboard draws it too.
EXTRACT_COLOR = "#7a869a"
