"""Request lines as documents: which task an endpoint is, a line's body converted to the
texts and params of that task's job (or a line error), and the reader that feeds the
batch's job from its input file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from docbatch.domain import jobs
from docbatch.domain.openai import responses
from docbatch.domain.openai.files import iter_lines
from docbatch.schema.errors import InputError
from docbatch.schema.models import DocumentIn
from docbatch.schema.settings import Settings
from docbatch.schema.validation import validate_document

GENERATE_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/responses")
DOCBATCH_PREFIX = "/v1/docbatch/"

# What a task runs when no model is configured (the handlers' defaults), so a batch can
# name it: the bundled MiniLM answers to "all-MiniLM-L6-v2".
DEFAULT_MODELS = {"embed": "sentence-transformers/all-MiniLM-L6-v2"}


# Model names real OpenAI Batch scripts send. None of them is served here unless
# DOCBATCH_OPENAI_MODELS maps it to a task (the api warns at start-up when none is).
COMMON_OPENAI_MODELS = {
    "text-embedding-3-small": "embed",
    "text-embedding-3-large": "embed",
    "text-embedding-ada-002": "embed",
    "gpt-4o-mini": "generate",
    "gpt-4o": "generate",
    "gpt-4.1-mini": "generate",
    "gpt-3.5-turbo": "generate",
}


def unmapped_openai_models(settings: Settings) -> str | None:
    """A warning when no common OpenAI model name resolves to a task here (a script that
    names ``text-embedding-3-small`` would find every line in the error file), else None."""
    if any(resolve_model(name, task, settings) for name, task in COMMON_OPENAI_MODELS.items()):
        return None
    return (
        "no DOCBATCH_OPENAI_MODELS alias maps OpenAI's model names ("
        + ", ".join(sorted(COMMON_OPENAI_MODELS))
        + "): /v1/batches request lines naming them fail with model_not_found. Map them, "
        """e.g. DOCBATCH_OPENAI_MODELS='{"text-embedding-3-small": "embed"}' (the bundled """
        "all-MiniLM-L6-v2 gives 384-dimension vectors, not OpenAI's 1536)"
    )


def endpoint_task(endpoint: str, settings: Settings) -> str | None:
    """The docbatch task that serves ``endpoint``; None for an endpoint we don't know."""
    if endpoint == "/v1/embeddings":
        return "embed"
    if endpoint == "/v1/moderations":
        return "classify"
    if endpoint in GENERATE_ENDPOINTS:
        return "generate"
    if endpoint.startswith(DOCBATCH_PREFIX):
        task = endpoint.removeprefix(DOCBATCH_PREFIX)
        return task if task in settings.models else None
    return None


def supported_endpoints(settings: Settings) -> list[str]:
    return ["/v1/embeddings", "/v1/moderations", *GENERATE_ENDPOINTS] + [
        DOCBATCH_PREFIX + t for t in sorted(settings.models) if t != "embed"
    ]


@dataclass
class LineError:
    code: str
    message: str
    param: str | None = None


@dataclass
class Converted:
    """One request line as the job sees it: its texts and the task's params."""

    texts: list[str]
    params: dict[str, Any]
    model: str | None
    encoding: str = "float"
    # /v1/moderations: a category is flagged at this score or above (the setting in force
    # when the batch was created, kept with its documents).
    threshold: float | None = None


def resolve_model(name: Any, task: str, settings: Settings) -> str | None:
    """The deployment of ``task`` a line's model name asks for: a deployment's own name, a
    DOCBATCH_OPENAI_MODELS alias (whose value names a deployment, or a task: its default),
    or a deployment's configured model id (whole, or its last path part; the task's
    default deployment first)."""
    if not isinstance(name, str):
        return None
    if settings.is_deployment(name) and settings.task_of(name) == task:
        return name
    target = settings.openai_models.get(name)
    if target is not None:
        ok = settings.is_deployment(target) and settings.task_of(target) == task
        return target if ok else None
    for dep in settings.deployments_of(task):
        configured = dep.model or DEFAULT_MODELS.get(task, "")
        if name in {configured, configured.rstrip("/").rsplit("/", 1)[-1]} - {""}:
            return dep.name
    return None


def convert_line(req: dict[str, Any], task: str, settings: Settings) -> Converted | LineError:
    body: dict[str, Any] = req["body"]
    if req["url"] == "/v1/moderations":
        return _convert_moderation(body, settings)
    if task == "embed":
        return _convert_embeddings(body, settings)
    if task == "generate":
        if task not in settings.models:
            return LineError(
                "endpoint_unavailable",
                f"{req['url']} is served by the 'generate' task, which this deployment does "
                "not run; use /v1/embeddings or /v1/docbatch/<task>",
            )
        return _convert_generation(req["url"], body, settings)
    model = body.get("model")
    deployment = task if model is None else resolve_model(model, task, settings)
    if deployment is None:
        return _unknown_model(model, task, settings)
    text = body.get("text")
    if not isinstance(text, str):
        return LineError("missing_required_parameter", "body.text must be a string", "text")
    raw = {k: v for k, v in body.items() if k not in ("text", "model")}
    raw["model"] = deployment
    params = _task_params(json.dumps([task, raw], sort_keys=True), settings)
    if isinstance(params, LineError):
        return params
    return Converted([text], params, model)


_PARAMS_CACHE: dict[tuple[str, int], dict[str, Any] | LineError] = {}


def _task_params(key: str, settings: Settings) -> dict[str, Any] | LineError:
    """A task's checked params; the lines of a batch mostly repeat one set, checked once."""
    cache_key = (key, id(settings))
    got = _PARAMS_CACHE.get(cache_key)
    if got is None:
        task, raw = json.loads(key)
        try:
            [got] = jobs.parse_tasks([{**raw, "type": task}], settings)
        except InputError as exc:
            field = exc.field.removeprefix("tasks[0].")
            got = LineError("invalid_parameter", exc.message, field)
        if len(_PARAMS_CACHE) > 256:
            _PARAMS_CACHE.clear()
        _PARAMS_CACHE[cache_key] = got
    return dict(got) if isinstance(got, dict) else got


def _unknown_model(model: Any, task: str, settings: Settings) -> LineError:
    names = ", ".join(d.name for d in settings.deployments_of(task))
    return LineError(
        "model_not_found",
        f"The model {model!r} does not exist here. The {task!r} deployments are: {names} "
        "(GET /v1/models lists every model); map other names with DOCBATCH_OPENAI_MODELS.",
        "model",
    )


# Request parameters that change nothing here, and those we cannot honour.
_IGNORED = {"user", "store", "metadata", "stream", "service_tier", "parallel_tool_calls"}
_SAMPLING = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "n"}


def _convert_generation(
    url: str, body: dict[str, Any], settings: Settings
) -> Converted | LineError:
    """A chat or text completion request as a ``generate`` document: the messages (JSON)
    or the prompt is the text; the sampling parameters are the task's params."""
    chat = url == "/v1/chat/completions"
    model = body.get("model")
    deployment = resolve_model(model, "generate", settings)
    if deployment is None:
        return _unknown_model(model, "generate", settings)
    if url == "/v1/responses":
        try:
            prompt, got = responses.to_generate(body)
        except responses.Unsupported as exc:
            return LineError("invalid_parameter", exc.message, exc.param)
        checked = _task_params(
            json.dumps(["generate", {**got, "model": deployment}], sort_keys=True), settings
        )
        return checked if isinstance(checked, LineError) else Converted([prompt], checked, model)
    source = "messages" if chat else "prompt"
    unknown = sorted(set(body) - _IGNORED - _SAMPLING - {"model", source})
    if unknown:
        return LineError(
            "invalid_parameter", f"parameter {unknown[0]!r} is not supported", unknown[0]
        )
    if body.get("stream"):
        return LineError("invalid_parameter", "stream is not supported in a batch", "stream")
    if body.get("n", 1) != 1:
        return LineError("invalid_parameter", "n must be 1", "n")
    raw = body.get(source)
    if chat:
        ok = (
            isinstance(raw, list)
            and raw
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in raw)
        )
        text = json.dumps(raw, ensure_ascii=False) if ok else None
    else:
        text = raw if isinstance(raw, str) and raw else None
    if text is None:
        what = "a non-empty list of {role, content} messages" if chat else "a non-empty string"
        return LineError("invalid_parameter", f"{source} must be {what}", source)
    params: dict[str, Any] = {"input": source, "model": deployment}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        params["max_new_tokens"] = max_tokens
    # OpenAI's default is sampling at temperature 1; 0 is greedy.
    params["temperature"] = body.get("temperature", 1.0)
    for key in ("top_p", "seed"):
        if body.get(key) is not None:
            params[key] = body[key]
    stop = body.get("stop")
    if stop is not None:
        params["stop"] = [stop] if isinstance(stop, str) else stop
    checked = _task_params(json.dumps(["generate", params], sort_keys=True), settings)
    if isinstance(checked, LineError):
        return checked
    return Converted([text], checked, model)


def _convert_embeddings(body: dict[str, Any], settings: Settings) -> Converted | LineError:
    model = body.get("model")
    deployment = resolve_model(model, "embed", settings)
    if deployment is None:
        return _unknown_model(model, "embed", settings)
    unknown = sorted(set(body) - {"input", "model", "encoding_format", "user", "dimensions"})
    if unknown:
        return LineError("invalid_parameter", f"unknown parameter {unknown[0]!r}", unknown[0])
    if body.get("dimensions") is not None:
        return LineError(
            "invalid_parameter", "dimensions is not supported by this model", "dimensions"
        )
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        return LineError(
            "invalid_parameter", "encoding_format must be 'float' or 'base64'", "encoding_format"
        )
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return LineError(
            "invalid_parameter",
            "input must be a string or a non-empty list of strings (token arrays are not "
            "supported)",
            "input",
        )
    return Converted(texts, {"type": "embed", "model": deployment}, model, encoding)


def _convert_moderation(body: dict[str, Any], settings: Settings) -> Converted | LineError:
    """A moderation request on a ``classify`` deployment whose labels are the categories;
    ``model`` left out: the classify task's default deployment."""
    model = body.get("model")
    deployment = "classify" if model is None else resolve_model(model, "classify", settings)
    if deployment is None:
        return _unknown_model(model, "classify", settings)
    unknown = sorted(set(body) - {"input", "model"})
    if unknown:
        return LineError("invalid_parameter", f"unknown parameter {unknown[0]!r}", unknown[0])
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return LineError(
            "invalid_parameter",
            "input must be a string or a non-empty list of strings (images are not supported)",
            "input",
        )
    params = {"type": "classify", "model": deployment}
    return Converted(texts, params, model, threshold=settings.openai_moderation_threshold)


class TooManyDocuments(Exception):
    """The input file's lines expand to more documents than one job may hold."""

    def __init__(self, line: int, limit: int) -> None:
        self.line = line
        self.message = (
            f"line {line} takes the batch past {limit} documents (an embeddings line with a "
            "list input is one document per input), the most one job may hold "
            "(DOCBATCH_MAX_DOCUMENTS_PER_JOB); split the input file"
        )
        super().__init__(self.message)


class RequestLines:
    """The documents of a batch's job, converted from the input file as the job reads them.

    Lines may name different models of the endpoint's task (deployments or aliases): each
    line runs on its own deployment, one task of the job per deployment (the job's router,
    docbatch.domain.jobs.Router). Its documents are yielded grouped by deployment: the
    first model's lines as the file is read (a batch of one model is read once), every
    other model's afterwards, in one more pass each over its own lines. Every line is
    checked in the first pass, in file order; the rendered output puts them back in it.
    """

    def __init__(self, oid: int, endpoint: str, task: str, settings: Settings) -> None:
        self.oid, self.endpoint, self.task, self.settings = oid, endpoint, task, settings
        self.params: dict[str, Any] | None = None  # the first model's (the batch's task)
        self.model: str | None = None  # the model the first line names (the batch's)
        self.line_errors: list[dict[str, Any]] = []
        self.url_errors: list[dict[str, Any]] = []
        self.total = 0
        self.multi_input = False
        self._tasks: dict[str, dict[str, Any]] = {}  # deployment -> its lines' params
        self._later: dict[int, str] = {}  # line -> deployment, of the lines not yet yielded
        self._current: str | None = None  # the deployment of the documents being yielded
        self._first_used = False  # whether the first model's lines made any document

    def raw_lines(self) -> Iterator[tuple[int, bytes]]:
        for number, raw in enumerate(iter_lines(self.oid, self.settings), start=1):
            if raw.strip():
                yield number, raw

    def requests(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for number, raw in self.raw_lines():
            yield number, json.loads(raw)

    def first_params(self) -> None:
        """Find the params of the first line that converts: the first model's."""
        for _, req in self.requests():
            if req["url"] != self.endpoint:
                continue
            got = convert_line(req, self.task, self.settings)
            if isinstance(got, Converted):
                self.params, self.model = got.params, got.model
                self._current = deployment_of(got.params)
                self._tasks[self._current] = got.params
                return

    # -- the job's router (docbatch.domain.jobs.Router) --

    def task_of(self, doc: DocumentIn) -> str:
        assert self._current is not None
        return self._current

    def tasks(self) -> list[dict[str, Any]]:
        """The params of each model at least one document runs on."""
        used = set(self._later.values()) | ({self._current} if self._first_used else set())
        return [params for name, params in self._tasks.items() if name in used]

    def documents(self) -> Iterator[tuple[DocumentIn, int | None]]:
        """The job's documents, grouped by deployment; raises TooManyDocuments past
        DOCBATCH_MAX_DOCUMENTS_PER_JOB."""
        first = self._current
        seen: set[str] = set()
        documents = 0
        for number, req in self.requests():
            self.total += 1
            if req["url"] != self.endpoint:
                if len(self.url_errors) < 100:
                    self.url_errors.append(
                        {
                            "code": "url_mismatch",
                            "line": number,
                            "param": "url",
                            "message": f"The url {req['url']!r} does not match the batch's "
                            f"endpoint {self.endpoint!r}.",
                        }
                    )
                continue
            docs = self._checked(number, req, seen)
            if docs is None:
                continue
            documents += len(docs)
            if documents > self.settings.max_documents_per_job:
                raise TooManyDocuments(number, self.settings.max_documents_per_job)
            for checked in docs:
                seen.add(checked.custom_id)
            deployment = self._later.pop(number)
            if deployment == first:
                self._first_used = True
                for checked in docs:
                    yield checked, None
            else:
                self._later[number] = deployment
        # The other models' lines, checked already: one pass over the file for each.
        for deployment in list(self._tasks)[1:]:
            self._current = deployment
            for number, raw in self.raw_lines():
                if self._later.get(number) != deployment:
                    continue
                docs = self._checked(number, json.loads(raw), None)
                assert docs is not None  # it passed the same checks in the first pass
                for checked in docs:
                    yield checked, None
        self._current = first

    def _checked(
        self, number: int, req: dict[str, Any], seen: set[str] | None
    ) -> list[DocumentIn] | None:
        """One line's checked documents (its deployment in ``_later``), or None when it is
        a line error (recorded). ``seen`` None: the line passed before, check nothing new."""
        cid = req["custom_id"]
        got = convert_line(req, self.task, self.settings)
        if isinstance(got, Converted):
            deployment = deployment_of(got.params)
            expected = self._tasks.setdefault(deployment, got.params)
            if got.params != expected:
                got = LineError(
                    "param_mismatch",
                    f"every request to one model must use the same parameters as the first "
                    f"one to it ({expected}); this one has {got.params}",
                )
        docs: list[DocumentIn] = []
        if isinstance(got, Converted):
            many = len(got.texts) > 1
            self.multi_input |= many
            meta: list[Any] = [number, cid, 0, len(got.texts), got.encoding]
            if got.threshold is not None or got.model != self.model:
                meta.append(got.threshold)
            if got.model != self.model:  # the model the line named, for its body
                meta.append(got.model)
            for i, text in enumerate(got.texts):
                doc_cid = f"{cid}[{i}]" if many else cid
                doc = {
                    "custom_id": doc_cid,
                    "text": text,
                    "metadata": {"openai": [*meta[:2], i, *meta[3:]]},
                }
                try:
                    # The checked document itself goes to create_job (checked once).
                    checked = validate_document(doc, self.settings)
                except InputError as exc:
                    field = exc.field.removeprefix("documents[0].")
                    got = LineError("invalid_parameter", exc.message, field)
                    break
                if seen is not None and doc_cid in seen:
                    got = LineError("duplicate_custom_id", f"duplicate custom_id {doc_cid!r}")
                    break
                docs.append(checked)
        if isinstance(got, LineError):
            self.line_errors.append(
                {"line": number, "custom_id": cid, "code": got.code, "message": got.message}
                | ({"param": got.param} if got.param else {})
            )
            return None
        self._later[number] = deployment_of(got.params)
        return docs


def deployment_of(params: dict[str, Any]) -> str:
    """The job task key of a line's params: the deployment it runs on."""
    return str(params.get("model") or params["type"])
