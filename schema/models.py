"""I/O models shared by the api, the CLI and the worker (pydantic, no FastAPI)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from docbatch.schema.languages import check_language
from docbatch.schema.settings import Settings, get_settings
from docbatch.schema.tasks import TASKS
from docbatch.schema.text_checks import (
    depth_message,
    is_blank,
    json_problem,
    string_problem,
    template_problem,
    too_deep,
)

# Input models are the one source of truth for what a request may hold: the api validates
# every request and every NDJSON line with them (schema/validation.py) and the OpenAPI
# document is generated from them. Limits that are settings (document bytes, labels,
# metadata bytes, JSON depth) are read from the Settings passed as validation context
# (``Model.model_validate(raw, context={"settings": s})``); fixed rules live here once.
STRICT = ConfigDict(extra="forbid", strict=True)


def settings_of(info: ValidationInfo) -> Settings:
    try:
        return info.context["settings"]  # type: ignore[index,no-any-return]
    except (TypeError, KeyError):
        return get_settings()


def _clean(value: str) -> str:
    problem = string_problem(value)
    if problem:
        raise PydanticCustomError("bad_string", problem)
    return value


def _visible(value: str) -> str:
    if is_blank(value):
        raise PydanticCustomError(
            "blank_string", "is empty or only whitespace or invisible characters"
        )
    return value


PRIORITY_MIN, PRIORITY_MAX = 0, 9


def _priority_range(value: Any, handler: Any) -> int:
    # Strict: "9", " 9 ", 9.7 and true are errors rather than 9.
    try:
        return int(handler(value))
    except ValidationError:
        raise PydanticCustomError(
            "int_range",
            "must be an integer from {lo} to {hi}, got {got}",
            {"lo": PRIORITY_MIN, "hi": PRIORITY_MAX, "got": repr(value)},
        ) from None


Priority = Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX), WrapValidator(_priority_range)]
Text = Annotated[str, AfterValidator(_clean), AfterValidator(_visible)]
LanguageCode = Annotated[str, Field(min_length=2, max_length=16), AfterValidator(_clean)]


def _language(value: str | None) -> str | None:
    problem = check_language(value) if value is not None else None
    if problem:
        raise PydanticCustomError("language", problem)
    return value


def _labels_within_limit(labels: list[str] | None, info: ValidationInfo) -> list[str] | None:
    limit = settings_of(info).max_labels_per_task
    if labels is not None and len(labels) > limit:
        raise PydanticCustomError(
            "too_many_labels",
            "{n} labels; the limit is {limit} (DOCBATCH_MAX_LABELS_PER_TASK)",
            {"n": len(labels), "limit": limit},
        )
    if labels is not None and not labels:
        raise PydanticCustomError(
            "no_labels", "is empty; give at least one label, or leave labels out"
        )
    _each_within(labels or [], settings_of(info).max_label_chars, "label", "MAX_LABEL_CHARS")
    return labels


def _each_within(values: list[str], limit: int, what: str, setting: str) -> None:
    for i, value in enumerate(values):
        if len(value) > limit:
            raise PydanticCustomError(
                f"{what}_too_long",
                "{what} {i} is {n} characters; the limit is {limit} (DOCBATCH_{setting})",
                {"what": what, "i": i, "n": len(value), "limit": limit, "setting": setting},
            )


class _Task(BaseModel):
    """What every task has: the deployment (named model) that runs it.

    ``model`` names a deployment of the task (``Settings.deployments_of``); left out, the
    task's default deployment, named after the task. It is stored resolved, so a job's
    task params always say which deployment ran it.
    """

    model_config = STRICT
    model: Annotated[str, Field(min_length=1, max_length=100)] | None = None

    @model_validator(mode="after")
    def _known_deployment(self, info: ValidationInfo) -> _Task:
        settings = settings_of(info)
        kind = getattr(self, "type", "")
        if self.model is None:
            self.model = kind
            return self
        if not (settings.is_deployment(self.model) and settings.task_of(self.model) == kind):
            names = ", ".join(d.name for d in settings.deployments_of(kind))
            raise PydanticCustomError(
                "unknown_model",
                "unknown model {got} for task {task}; its deployments: {names}",
                {"got": repr(self.model), "task": kind, "names": names, "at": ".model"},
            )
        return self


class SummarizeTask(_Task):
    model_config = STRICT
    type: Literal["summarize"]
    method: Literal["auto", "extractive", "abstractive"] = "auto"
    max_sentences: int = Field(3, ge=1, le=50)


class TagsTask(_Task):
    model_config = STRICT
    type: Literal["tags"]
    labels: list[Text] | None = None
    top_k: int = Field(5, ge=1, le=100)

    _labels = field_validator("labels")(_labels_within_limit)


class TranslateTask(_Task):
    model_config = STRICT
    type: Literal["translate"]
    target_lang: Annotated[LanguageCode, AfterValidator(_language)]
    source_lang: Annotated[LanguageCode | None, AfterValidator(_language)] = None


class EmbedTask(_Task):
    model_config = STRICT
    type: Literal["embed"]
    include_chunks: bool = True


class ClassifyTask(_Task):
    model_config = STRICT
    type: Literal["classify"]
    # The model's own labels restrict the output; other labels need an NLI model (zero-shot).
    labels: list[Text] | None = None
    hypothesis_template: Annotated[
        str, Field(min_length=3, max_length=500), AfterValidator(_clean)
    ] = "This example is {}."
    multi_label: bool = False
    aggregate: Literal["mean", "max"] = "mean"
    chunk_scores: bool = False
    top_k: int | None = Field(None, ge=1, le=1000)

    _labels = field_validator("labels")(_labels_within_limit)

    @field_validator("hypothesis_template")
    @classmethod
    def _one_slot(cls, value: str) -> str:
        problem = template_problem(value)
        if problem:
            raise PydanticCustomError("template_slot", problem)
        return value


class EntitiesTask(_Task):
    model_config = STRICT
    type: Literal["entities"]
    aggregation: Literal["simple", "first", "average", "max"] = "simple"


class AskTask(_Task):
    model_config = STRICT
    type: Literal["ask"]
    questions: list[Text] = Field(min_length=1)
    min_score: float = Field(0.0, ge=0.0, le=1.0)
    max_answer_len: int = Field(15, ge=1, le=512)

    @field_validator("questions")
    @classmethod
    def _questions_within_limit(cls, questions: list[str], info: ValidationInfo) -> list[str]:
        limit = settings_of(info).max_questions_per_task
        if len(questions) > limit:
            raise PydanticCustomError(
                "too_many_questions",
                "{n} questions; the limit is {limit} (DOCBATCH_MAX_QUESTIONS_PER_TASK)",
                {"n": len(questions), "limit": limit},
            )
        _each_within(
            questions, settings_of(info).max_question_chars, "question", "MAX_QUESTION_CHARS"
        )
        return [q.strip() for q in questions]


class FewShotExample(BaseModel):
    """One worked example, rendered with the job's template before the document."""

    model_config = STRICT
    text: str = Field(max_length=100_000)
    output: str = Field(max_length=100_000)


class GenerateTask(_Task):
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

    model_config = STRICT
    type: Literal["generate"]
    input: Literal["text", "prompt", "messages"] = "text"
    template: str | None = Field(None, min_length=1, max_length=100_000)
    examples: list[FewShotExample] | None = Field(None, max_length=64)
    example_separator: str | None = Field(None, max_length=100)
    # "auto": through the chat template when the model has one; with none, the text as is
    # (input "messages": their contents joined, system first: what /v1/responses sends).
    chat: bool | Literal["auto"] | None = None
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

    @field_validator("max_new_tokens")
    @classmethod
    def _new_tokens_within_limit(cls, value: int | None, info: ValidationInfo) -> int | None:
        limit = settings_of(info).max_new_tokens
        if value is not None and value > limit:
            raise PydanticCustomError(
                "too_many_new_tokens",
                "{n}; the limit is {limit} (DOCBATCH_MAX_NEW_TOKENS)",
                {"n": value, "limit": limit},
            )
        return value

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
                # chat "auto" with messages: a plain prompt on a model with no chat template.
                and not (n == "chat" and self.chat == "auto" and self.input == "messages")
            ]
            if given:
                raise ValueError(
                    f"{given[0]} applies to input 'text' only; with input {self.input!r} "
                    "the document is the whole prompt"
                )
        if self.do_sample and self.temperature == 0:
            raise ValueError("temperature 0 is greedy decoding; it conflicts with do_sample")
        return self


def _task_shorthand(value: Any, info: ValidationInfo) -> Any:
    """``"tags"`` means ``{"type": "tags"}``; an unknown type names the tasks there are."""
    if isinstance(value, str):
        value = {"type": value}
    if isinstance(value, dict):
        known = sorted(settings_of(info).models)
        kind = value.get("type")
        if not isinstance(kind, str) or kind not in known:
            raise PydanticCustomError(
                "unknown_task",
                "unknown task {got}; known tasks: {known}",
                {"got": repr(kind), "known": ", ".join(known), "at": ".type"},
            )
    return value


# A new task type is one more model in this union, a line in schema/tasks.py and a handler
# in worker/handlers/; the check below the union says which is missing.
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
    BeforeValidator(_task_shorthand),
]


def _task_names(spec: Any) -> tuple[str, ...]:
    members = get_args(get_args(spec)[0])
    return tuple(get_args(m.model_fields["type"].annotation)[0] for m in members)


if _task_names(TaskSpec) != TASKS:
    raise RuntimeError(
        f"TaskSpec's tasks {_task_names(TaskSpec)} differ from schema/tasks.py's {TASKS}: "
        "a task needs its line in TASK_KINDS and its parameter model in TaskSpec, in one order"
    )


def _each_task_once(tasks: list[Any]) -> list[Any]:
    # A task may be listed once per deployment (two classify heads side by side).
    seen: set[str] = set()
    for i, task in enumerate(tasks):
        if task.model in seen:
            what = "task" if task.model == task.type else "model"
            raise PydanticCustomError(
                "task_twice",
                "{what} {name} is listed twice",
                {
                    "what": what,
                    "name": repr(task.model),
                    "at": f"[{i}].type" if what == "task" else f"[{i}].model",
                },
            )
        seen.add(task.model)
    return tasks


TaskList = Annotated[list[TaskSpec], Field(min_length=1), AfterValidator(_each_task_once)]


NAME_MAX_CHARS = 200
SCHEDULE_ID_PREFIX = "sch_"  # schema/tables.py makes schedule ids "sch_<hex>"


def _not_an_id(value: str) -> str:
    # GET and DELETE take an id or a name: a name shaped like an id could point at another
    # schedule.
    if value.startswith(SCHEDULE_ID_PREFIX):
        raise PydanticCustomError(
            "name_like_id",
            f"must not start with {SCHEDULE_ID_PREFIX!r}: that is how schedule ids look",
        )
    return value


ScheduleName = Annotated[
    str,
    Field(min_length=1, max_length=NAME_MAX_CHARS),
    AfterValidator(_clean),
    AfterValidator(_visible),
    AfterValidator(_not_an_id),
]


class DocumentIn(BaseModel):
    """One document: in a JSON body's ``documents`` or one line of an NDJSON body."""

    model_config = STRICT
    custom_id: str = Field(min_length=1, max_length=512)
    text: str = Field(description="UTF-8 text, up to DOCBATCH_MAX_DOCUMENT_BYTES bytes")
    metadata: dict[str, Any] | None = Field(
        None,
        description="Any JSON object, returned with the results; up to "
        "DOCBATCH_MAX_METADATA_BYTES encoded and DOCBATCH_MAX_JSON_DEPTH deep",
    )

    # One validator for the whole document rather than one per field: this runs for every
    # line of a million-line upload, and each Python validator call costs more than its check.
    @model_validator(mode="after")
    def _storable(self, info: ValidationInfo) -> DocumentIn:
        settings = settings_of(info)
        problem = string_problem(self.custom_id)
        if problem:
            raise PydanticCustomError("bad_id", problem, {"at": ".custom_id"})
        if is_blank(self.custom_id):
            raise PydanticCustomError(
                "blank_id",
                "is required and must be a non-empty string (not only invisible characters)",
                {"at": ".custom_id"},
            )
        self._check_text(self.text, repr(self.custom_id), settings.max_document_bytes)
        if self.metadata is not None:
            encoded = check_metadata(self.metadata, settings)
            # Handed to the caller through the context: the COPY that stores the document
            # writes exactly this string, so a million-line upload encodes metadata once.
            if isinstance(info.context, dict):
                info.context["metadata_json"] = encoded
        return self

    @staticmethod
    def _check_text(text: str, custom_id: str, limit: int) -> None:
        problem = "contains a NUL character" if "\x00" in text else None
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            size = len(text.encode("utf-8", errors="surrogatepass"))
            problem = problem or string_problem(text)
        if size > limit:
            raise PydanticCustomError(
                "text_too_big",
                "{id} is {size} bytes; the limit is {limit} bytes (DOCBATCH_MAX_DOCUMENT_BYTES)",
                {"id": custom_id, "size": size, "limit": limit, "at": ".text"},
            )
        if problem:
            raise PydanticCustomError(
                "bad_text", "{problem} ({id})", {"problem": problem, "id": custom_id, "at": ".text"}
            )
        if is_blank(text):
            raise PydanticCustomError(
                "blank_text",
                "is empty or whitespace only, or only invisible characters ({id})",
                {"id": custom_id, "at": ".text"},
            )


_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def check_metadata(value: dict[str, Any], settings: Settings) -> str:
    """``json.dumps(value)``; raises naming what makes metadata unstorable (jsonb) or too big."""
    if too_deep(value, settings.max_json_depth):
        raise PydanticCustomError(
            "bad_metadata", depth_message(settings.max_json_depth), {"at": ".metadata"}
        )
    # Quick screen with json's cached ASCII encoder: its output is never shorter than the
    # compact UTF-8 form, and NUL, surrogates (\ud800-\udfff) and NaN/Infinity all show in
    # it. Only a hit (or a size over the limit) takes the exact, slower path.
    quick = json.dumps(value)
    suspect = "\\u0000" in quick or "\\ud" in quick or "NaN" in quick or "Infinity" in quick
    if suspect:
        problem = json_problem(value, settings.max_json_depth)
        if problem:
            raise PydanticCustomError("bad_metadata", problem, {"at": ".metadata"})
    if len(quick) > settings.max_metadata_bytes:
        size = len(_COMPACT.encode(value).encode("utf-8"))
        if size > settings.max_metadata_bytes:
            raise PydanticCustomError(
                "metadata_too_big",
                "is {size} bytes as JSON; the limit is {limit} bytes (DOCBATCH_MAX_METADATA_BYTES)",
                {"size": size, "limit": settings.max_metadata_bytes, "at": ".metadata"},
            )
    return quick


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError(
            "url", "must be an http:// or https:// URL, got {url}", {"url": repr(value)}
        )
    return value


class JobCreate(BaseModel):
    """A job: its tasks and documents (a JSON body), or its options alone (the query of an
    NDJSON body, the text fields of a multipart upload) with the documents streamed."""

    model_config = STRICT
    tasks: TaskList
    documents: list[DocumentIn] = Field(default_factory=list)
    name: Annotated[str, Field(max_length=NAME_MAX_CHARS), AfterValidator(_clean)] | None = None
    priority: Priority = 0
    webhook_url: (
        Annotated[str, Field(max_length=2048), AfterValidator(_clean), AfterValidator(_http_url)]
        | None
    ) = None
    reuse_results: bool = False
    # Deleted this many days after it ends; never longer than the tenant's retention.
    retention_days: Annotated[int, Field(ge=1, le=36500)] | None = None
    # False: the original bytes of its files are dropped once their text is extracted.
    keep_originals: bool | None = None


# The job options an NDJSON or multipart submission may carry beside its documents.
JOB_OPTIONS = tuple(name for name in JobCreate.model_fields if name != "documents")


# POST /v1/batches (the OpenAI Batch API). What an endpoint means depends on the tasks the
# deployment runs, so ``endpoint`` is checked against Settings where the batch is created.
BATCH_METADATA_PAIRS = 16
MetadataKey = Annotated[str, Field(max_length=64), AfterValidator(_clean)]
MetadataValue = Annotated[str, Field(max_length=512), AfterValidator(_clean)]


class OutputExpiresAfter(BaseModel):
    """OpenAI's ``output_expires_after``: the batch's output and error files expire this
    many seconds after they were created (``expires_at``) and are deleted then."""

    model_config = STRICT
    anchor: Literal["created_at"]
    seconds: Annotated[int, Field(ge=3600, le=2_592_000)]


class BatchCreate(BaseModel):
    """The body of ``POST /v1/batches``, as OpenAI's ``client.batches.create`` sends it."""

    model_config = STRICT
    input_file_id: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_clean)]
    endpoint: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_clean)]
    completion_window: Literal["24h"]
    metadata: (
        Annotated[dict[MetadataKey, MetadataValue], Field(max_length=BATCH_METADATA_PAIRS)] | None
    ) = None
    output_expires_after: OutputExpiresAfter | None = None


class TaskCounts(BaseModel):
    total: int
    succeeded: int
    failed: int
    cancelled: int
    pending: int
    chunks: int
    tokens: int
    # Succeeded by copying an earlier job's result (domain/reuse.py); part of ``succeeded``.
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
    # What keeps the job from moving, e.g. "no worker serves deployment e5: ..." (its units
    # stay queued, never lost, until a worker of that deployment starts).
    warnings: list[str] = Field(default_factory=list)
    # While the job is ``deleting``: the rows still to delete, per table.
    delete_left: dict[str, int] | None = None


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
    priority: int = 0
    timezone: str = "UTC"
    only_changed: bool = False
    # The URL itself is a secret (it often carries a token): only whether there is one.
    has_webhook: bool = False


class SchedulesPublic(BaseModel):
    data: list[SchedulePublic]
    count: int


class KeyCreate(BaseModel):
    """``POST /v1/admin/keys``: a new key for ``tenant`` (the tenant is created if new)."""

    tenant: str = Field(description="1-64 letters, digits, '_', '.' or '-'")


class KeyPublic(BaseModel):
    """A tenant's API key as the admin sees it; ``key`` only in the answer that creates it."""

    id: str
    tenant: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None
    key: str | None = Field(None, description="The whole key: shown once, never stored")


class KeysPublic(BaseModel):
    data: list[KeyPublic]
    count: int


class TaskResult(BaseModel):
    """One task's result on a results line: ``output`` when it succeeded, ``error`` when it
    failed; ``model`` (``id``, ``revision``) and ``params`` are what produced it."""

    model_config = ConfigDict(extra="allow")
    status: str
    output: dict[str, Any] | None = None
    error: str | None = None
    model: dict[str, Any] | None = None
    params: dict[str, Any] | None = None


class ResultLine(BaseModel):
    """One document's line of ``GET /v1/jobs/{id}/results`` (NDJSON), in submission order."""

    model_config = ConfigDict(extra="allow")
    custom_id: str
    results: dict[str, TaskResult]
    metadata: dict[str, Any] | None = None
