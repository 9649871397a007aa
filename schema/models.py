"""I/O models shared by the api, the CLI and the worker (pydantic, no FastAPI)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)


class SummarizeTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["summarize"]
    method: Literal["auto", "extractive", "abstractive"] = "auto"
    max_sentences: int = Field(3, ge=1, le=50)


class TagsTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["tags"]
    labels: list[str] | None = None
    top_k: int = Field(5, ge=1, le=100)


class TranslateTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["translate"]
    target_lang: str = Field(min_length=2, max_length=16)
    source_lang: str | None = Field(None, min_length=2, max_length=16)


class EmbedTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["embed"]
    include_chunks: bool = True


class ClassifyTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["classify"]
    # The model's own labels restrict the output; other labels need an NLI model (zero-shot).
    labels: list[str] | None = None
    hypothesis_template: str = Field("This example is {}.", min_length=3, max_length=500)
    multi_label: bool = False
    aggregate: Literal["mean", "max"] = "mean"
    chunk_scores: bool = False
    top_k: int | None = Field(None, ge=1, le=1000)


class EntitiesTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["entities"]
    aggregation: Literal["simple", "first", "average", "max"] = "simple"


class AskTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["ask"]
    questions: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]] = Field(
        min_length=1
    )
    min_score: float = Field(0.0, ge=0.0, le=1.0)
    max_answer_len: int = Field(15, ge=1, le=512)


class FewShotExample(BaseModel):
    """One worked example, rendered with the job's template before the document."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=100_000)
    output: str = Field(max_length=100_000)


class GenerateTask(BaseModel):
    """Prompted generation with a decoder-only model (worker/handlers/generate.py).

    ``input`` says what a document's ``text`` is:

    - ``text`` (default): material put into ``template`` at ``{text}``, after the
      few-shot ``examples``; ``chat`` sends that prompt as a user message through the
      model's chat template. Long documents are generated per chunk (``truncate``),
      optionally folded by ``reduce_template``.
    - ``prompt``: the complete prompt, used as is (never cut);
    - ``messages``: a JSON list of OpenAI chat messages, rendered with the model's chat
      template (the shape of a ``/v1/chat/completions`` request).

    Sampling: greedy unless ``do_sample`` (or a ``temperature`` above 0); ``seed`` makes
    a document's sample the same whatever batch it lands in.
    """

    model_config = ConfigDict(extra="forbid")
    type: Literal["generate"]
    input: Literal["text", "prompt", "messages"] = "text"
    template: str | None = Field(None, min_length=1, max_length=100_000)
    examples: list[FewShotExample] | None = Field(None, max_length=64)
    example_separator: str | None = Field(None, max_length=100)
    chat: bool | None = None
    system: str | None = Field(None, max_length=100_000)
    reduce_template: str | None = Field(None, min_length=1, max_length=100_000)
    truncate: bool = True
    max_new_tokens: int | None = Field(None, ge=1)
    do_sample: bool | None = None
    temperature: float | None = Field(None, ge=0, le=100)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stop: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None, max_length=16
    )
    seed: int | None = Field(None, ge=0, le=2**63 - 1)

    @field_validator("template", "reduce_template")
    @classmethod
    def _has_slot(cls, value: str | None) -> str | None:
        if value is not None and "{text}" not in value:
            raise ValueError(
                'must contain {text} where the document goes, e.g. "Summarize:\\n{text}\\nSummary:"'
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GenerateTask:
        if self.input != "text":
            given = [
                n
                for n in ("template", "examples", "example_separator", "chat", "system")
                if getattr(self, n) is not None
            ]
            if given:
                raise ValueError(
                    f"{given[0]} applies to input 'text' only; with input {self.input!r} "
                    "the document is the whole prompt"
                )
        if self.do_sample and self.temperature == 0:
            raise ValueError("temperature 0 is greedy decoding; it conflicts with do_sample")
        return self


TaskSpec = Annotated[
    SummarizeTask
    | TagsTask
    | TranslateTask
    | EmbedTask
    | ClassifyTask
    | EntitiesTask
    | AskTask
    | GenerateTask,
    Field(discriminator="type"),
]


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    custom_id: str = Field(min_length=1, max_length=512)
    text: str
    metadata: dict[str, Any] | None = None


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[TaskSpec] = Field(min_length=1)
    documents: list[DocumentIn] = Field(default_factory=list)
    name: str | None = Field(None, max_length=200)
    priority: int = Field(0, ge=0, le=9)
    webhook_url: str | None = Field(None, max_length=2048)
    reuse_results: bool = False


class TaskCounts(BaseModel):
    total: int
    succeeded: int
    failed: int
    cancelled: int
    pending: int
    chunks: int
    tokens: int
    # Succeeded by copying an earlier job's result (schema/reuse.py); part of ``succeeded``.
    reused: int = 0


class JobPublic(BaseModel):
    id: str
    name: str | None
    status: str
    priority: int
    tasks: dict[str, dict[str, Any]]
    counts: dict[str, TaskCounts]
    documents: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    elapsed_seconds: float | None
    documents_per_second: float | None
    reuse_results: bool = False


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class ScheduleRunPublic(BaseModel):
    period_start: dt.datetime
    fired_at: dt.datetime
    job_id: str | None
    job_status: str | None
    error: str | None


class SchedulePublic(BaseModel):
    id: str
    name: str
    cron: str
    source: dict[str, Any]
    tasks: list[dict[str, Any]]
    reuse_results: bool
    enabled: bool
    created_at: dt.datetime
    next_run_at: dt.datetime
    runs: list[ScheduleRunPublic] = Field(default_factory=list)


class SchedulesPublic(BaseModel):
    data: list[SchedulePublic]
    count: int
