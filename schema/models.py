"""I/O models shared by the api, the CLI and the worker (pydantic, no FastAPI)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


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


TaskSpec = Annotated[
    SummarizeTask | TagsTask | TranslateTask | EmbedTask | ClassifyTask | EntitiesTask | AskTask,
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
