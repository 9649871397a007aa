"""The Python client of the docbatch api (what the ``docbatch`` CLI uses too).

Works in the ``docbatch[client]`` install: httpx and pydantic, no torch, no database::

    from docbatch import Client

    client = Client("http://docbatch:8000", api_key="dbk_...")   # or DOCBATCH_API_URL/_KEY
    job = client.submit(paths=["inbox/"], tasks=["summarize", "tags"])
    job.wait()                                 # a JobPublic; job.status, job.counts
    for line in job.iter_results():            # ResultLine: custom_id, results, metadata
        print(line.custom_id, line.results["summarize"].output)
    job.download("out.parquet", format="parquet")
    df = job.to_pandas()                       # needs pyarrow and pandas

Errors, all ``DocbatchError``::

    ApiError            the api answered 4xx/5xx: ``status_code`` and a one-line message
    └── ApiUnreachable  no answer at ``base_url`` (connection refused, DNS, timeout)
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from docbatch.schema.errors import DocbatchError
from docbatch.schema.models import JobPublic, ResultLine, SchedulePublic, ScheduleRunPublic
from docbatch.schema.statuses import TERMINAL_JOB_STATUSES


class ApiError(DocbatchError):
    """The api answered with an error (``status_code``), or could not be reached."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ApiUnreachable(ApiError):
    """Nothing answered at the api's URL, or the connection broke mid-answer."""


_HINTS = {401: " (set DOCBATCH_API_KEY or --api-key to a key from `docbatch keys create`)"}
TaskArg = str | dict[str, Any]


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", " ")


def multipart(
    boundary: str, fields: dict[str, str], files: list[tuple[str, Path | Iterable[bytes]]]
) -> Iterator[bytes]:
    """A multipart/form-data body streamed part by part: ``files`` are ``(name, path)`` (read
    from disk a MiB at a time) or ``(name, chunks)``."""
    for key, value in fields.items():
        yield (
            (f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n').encode()
            + value.encode()
            + b"\r\n"
        )
    for name, source in files:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{_quote(name)}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        if isinstance(source, Path):
            with source.open("rb") as fh:
                while block := fh.read(1 << 20):
                    yield block
        else:
            yield from source
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def task_list(tasks: Iterable[TaskArg] | TaskArg) -> list[dict[str, Any]]:
    """``"tags"``, ``{"type": "tags", "labels": [...]}`` or a list of either."""
    items = [tasks] if isinstance(tasks, str | dict) else list(tasks)
    return [{"type": t} if isinstance(t, str) else dict(t) for t in items]


def document_lines(documents: Any) -> Iterator[bytes]:
    """NDJSON lines of documents: dicts (``custom_id``, ``text``, ``metadata``), plain
    strings (numbered ``custom_id``), or a pandas DataFrame with a ``text`` column (and
    ``custom_id``/``metadata`` if it has them; the index otherwise)."""
    if hasattr(documents, "to_dict") and hasattr(documents, "columns"):  # a DataFrame
        frame = documents
        if "text" not in frame.columns:
            raise ValueError("the DataFrame needs a 'text' column")
        has_id = "custom_id" in frame.columns
        has_meta = "metadata" in frame.columns
        for index, row in zip(frame.index, frame.to_dict("records"), strict=True):
            doc = {"custom_id": str(row["custom_id"] if has_id else index), "text": row["text"]}
            if has_meta and row["metadata"] is not None:
                doc["metadata"] = row["metadata"]
            yield (json.dumps(doc, ensure_ascii=False, default=str) + "\n").encode()
        return
    for i, doc in enumerate(documents):
        item = {"custom_id": str(i), "text": doc} if isinstance(doc, str) else doc
        yield (json.dumps(item, ensure_ascii=False, default=str) + "\n").encode()


def expand_paths(paths: Iterable[str | Path]) -> list[tuple[str, Path]]:
    """Files as ``(name, path)``: a file by its path as given, a folder's files (hidden ones
    skipped) by their path below it, a glob's matches (``docbatch.inputs.expand``)."""
    from docbatch.inputs import expand

    return [(f.name, f.path) for f in expand(Path(p) for p in paths)]


def submission(
    tasks: Any,
    documents: Any,
    paths: Iterable[str | Path] | None,
    options: dict[str, Any],
) -> tuple[dict[str, str], Iterator[bytes]]:
    """The headers and streamed multipart body of one job submission."""
    if documents is None and not paths:
        raise ValueError("submit needs documents=... or paths=...")
    fields = {"tasks": json.dumps(task_list(tasks))}
    for key in ("name", "priority", "webhook_url", "reuse_results"):
        value = options.get(key)
        if value is not None and value is not False:
            fields[key] = json.dumps(value) if isinstance(value, bool) else str(value)
    files: list[tuple[str, Path | Iterable[bytes]]] = []
    if documents is not None:
        files.append(("documents.jsonl", document_lines(documents)))
    files += list(expand_paths(paths or []))
    boundary = secrets.token_hex(16)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if options.get("idempotency_key"):
        headers["Idempotency-Key"] = str(options["idempotency_key"])
    return headers, multipart(boundary, fields, files)


def error_for(resp: httpx.Response) -> ApiError:
    """A one-line ``ApiError`` from an error response (its body already read)."""
    try:
        body = resp.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and "field" in error:
        line = f" (line {error['line']})" if error.get("line") is not None else ""
        detail = f"{error['field']}{line}: {error.get('message', '')}"
    elif isinstance(error, dict) and "message" in error:  # the OpenAI-shaped errors
        detail = str(error["message"])
    elif isinstance(body, dict) and isinstance(body.get("detail"), str):
        detail = body["detail"]
    else:
        detail = resp.text[:200] or resp.reason_phrase
    detail = " ".join(detail.split())  # one line
    code = resp.status_code
    return ApiError(f"{code} {detail}{_HINTS.get(code, '')}", status_code=code)


def unreachable(base_url: str, exc: httpx.TransportError) -> ApiUnreachable:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ApiUnreachable(
            f"cannot reach the api at {base_url} (set --api-url or DOCBATCH_API_URL)"
        )
    reason = str(exc) or type(exc).__name__
    return ApiUnreachable(f"lost the connection to the api at {base_url}: {reason}")


def defaults(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    """Arguments win; else ``DOCBATCH_API_URL``/``DOCBATCH_API_KEY`` (and ``.env``)."""
    if base_url is None or api_key is None:
        from docbatch.schema.settings import get_settings

        s = get_settings()
        base_url = s.api_url if base_url is None else base_url
        api_key = s.api_key if api_key is None else api_key
    return base_url.rstrip("/"), api_key


def write_atomically(target: Path, chunks: Iterable[bytes]) -> None:
    """Write to a temporary file beside ``target`` and rename it over ``target`` only when
    every chunk arrived: a failed download leaves an existing file as it was."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
        # mkstemp makes the file private; give it the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def parse_lines(chunks: Iterable[bytes]) -> Iterator[ResultLine]:
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield ResultLine.model_validate_json(line)
    if buffer.strip():
        yield ResultLine.model_validate_json(buffer)


def read_parquet(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("to_arrow()/to_pandas() need pyarrow: pip install pyarrow") from None
    return pq.read_table(path)


class Job:
    """A job on the api: ``data`` is its last-read ``JobPublic`` (``id``, ``status``,
    ``counts``, ... are read through to it). ``wait()`` polls until it ends."""

    def __init__(self, client: Client, data: JobPublic) -> None:
        self.client = client
        self.data = data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.data, name)

    def __repr__(self) -> str:
        return f"<Job {self.data.id} {self.data.status}>"

    @property
    def done(self) -> bool:
        return self.data.status in TERMINAL_JOB_STATUSES

    def refresh(self) -> Job:
        self.data = self.client.job(self.data.id).data
        return self

    def wait(
        self,
        poll_seconds: float = 1.0,
        timeout: float | None = None,
        on_update: Callable[[JobPublic], None] | None = None,
    ) -> JobPublic:
        """Poll until the job ends (``TimeoutError`` after ``timeout`` seconds); returns
        the final ``JobPublic``. ``on_update`` sees every read (a progress bar)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.refresh()
            if on_update is not None:
                on_update(self.data)
            if self.done:
                return self.data
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.data.id} is still {self.data.status}")
            time.sleep(poll_seconds)

    def iter_results(self, errors_only: bool = False) -> Iterator[ResultLine]:
        """Every document's line in submission order (readable while the job runs)."""
        return parse_lines(self.client.results(self.data.id, errors_only=errors_only))

    def errors(self) -> list[ResultLine]:
        """The failed documents, each with its failing tasks' ``error``."""
        return list(self.iter_results(errors_only=True))

    def download(self, path: str | Path, format: str = "ndjson") -> Path:
        """Results to ``path`` (``ndjson`` or ``parquet``), replaced only when complete."""
        target = Path(path)
        write_atomically(target, self.client.results(self.data.id, format=format))
        return target

    def to_arrow(self) -> Any:
        """The Parquet results as a ``pyarrow.Table`` (needs pyarrow)."""
        with tempfile.TemporaryDirectory() as tmp:
            return read_parquet(self.download(Path(tmp) / "results.parquet", "parquet"))

    def to_pandas(self) -> Any:
        """The Parquet results as a ``pandas.DataFrame`` (needs pyarrow and pandas)."""
        return self.to_arrow().to_pandas()

    def cancel(self) -> JobPublic:
        self.data = self.client.cancel(self.data.id)
        return self.data


class Client:
    """A synchronous client of one docbatch api. ``base_url``/``api_key`` default to
    ``DOCBATCH_API_URL``/``DOCBATCH_API_KEY``. Use as a context manager to close it."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, timeout: float = 60.0
    ) -> None:
        self.base_url, key = defaults(base_url, api_key)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; an error answer raises ``ApiError``, no answer ``ApiUnreachable``."""
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from None
        if resp.status_code >= 400:
            raise error_for(resp)
        return resp

    def stream(self, path: str, params: dict[str, Any] | None = None) -> Iterator[bytes]:
        try:
            with self.http.stream("GET", path, params=params) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise error_for(resp)
                yield from resp.iter_bytes()
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from None

    # -- jobs ------------------------------------------------------------------------------
    def submit(
        self,
        documents: Any = None,
        *,
        paths: Iterable[str | Path] | None = None,
        tasks: Any,
        name: str | None = None,
        priority: int | None = None,
        webhook_url: str | None = None,
        reuse_results: bool = False,
        idempotency_key: str | None = None,
    ) -> Job:
        """One job of ``documents`` (dicts, strings or a DataFrame) and/or ``paths`` (files
        and folders: NDJSON, PDFs, Word files, e-mails, archives, ...), streamed in one
        upload. ``tasks``: ``"tags"``, ``["tags", {"type": "translate", ...}]``."""
        options = {
            "name": name,
            "priority": priority,
            "webhook_url": webhook_url,
            "reuse_results": reuse_results,
            "idempotency_key": idempotency_key,
        }
        headers, body = submission(tasks, documents, paths, options)
        resp = self.request("POST", "/v1/jobs", content=body, headers=headers)
        return Job(self, JobPublic.model_validate(resp.json()))

    def job(self, job_id: str) -> Job:
        return Job(self, JobPublic.model_validate(self.request("GET", f"/v1/jobs/{job_id}").json()))

    def jobs(
        self, status: str | None = None, page_size: int = 50, limit: int | None = None
    ) -> Iterator[Job]:
        """This tenant's jobs, newest first, fetched a page at a time."""
        before: str | None = None
        seen = 0
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if status:
                params["status"] = status
            if before:
                params["before"] = before
            page = self.request("GET", "/v1/jobs", params=params).json()["data"]
            for raw in page:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield Job(self, JobPublic.model_validate(raw))
            if len(page) < page_size:
                return
            before = page[-1]["id"]

    def cancel(self, job_id: str) -> JobPublic:
        return JobPublic.model_validate(self.request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def storage_usage(self) -> dict[str, Any]:
        """``GET /v1/usage/storage``: what this tenant stores, what retention deletes next."""
        return dict(self.request("GET", "/v1/usage/storage").json())

    def delete(self, job_id: str) -> JobPublic:
        """Delete the job and everything stored for it (cancelled first if it runs); the
        answer says ``deleting`` and the job is a 404 once its rows have gone."""
        return JobPublic.model_validate(self.request("DELETE", f"/v1/jobs/{job_id}").json())

    def results(
        self, job_id: str, errors_only: bool = False, format: str = "ndjson"
    ) -> Iterator[bytes]:
        """The raw results body: NDJSON (``errors_only``: failed documents) or Parquet."""
        if errors_only:
            return self.stream(f"/v1/jobs/{job_id}/errors")
        params = {"format": format} if format != "ndjson" else None
        return self.stream(f"/v1/jobs/{job_id}/results", params)

    # -- admin (the admin key) ---------------------------------------------------------------
    def create_key(self, tenant: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", "/v1/admin/keys", json={"tenant": tenant}
        ).json()
        return result

    def keys(self, tenant: str | None = None) -> dict[str, Any]:
        params = {"tenant": tenant} if tenant else {}
        result: dict[str, Any] = self.request("GET", "/v1/admin/keys", params=params).json()
        return result

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", f"/v1/admin/keys/{key_id}").json()
        return result

    # -- schedules -------------------------------------------------------------------------
    def create_schedule(self, body: dict[str, Any]) -> SchedulePublic:
        return SchedulePublic.model_validate(
            self.request("POST", "/v1/schedules", json=body).json()
        )

    def schedules(self) -> list[SchedulePublic]:
        data = self.request("GET", "/v1/schedules").json()["data"]
        return [SchedulePublic.model_validate(s) for s in data]

    def schedule(self, ref: str) -> SchedulePublic:
        return SchedulePublic.model_validate(self.request("GET", f"/v1/schedules/{ref}").json())

    def delete_schedule(self, ref: str) -> None:
        self.request("DELETE", f"/v1/schedules/{ref}")

    def pause_schedule(self, ref: str) -> SchedulePublic:
        return SchedulePublic.model_validate(
            self.request("POST", f"/v1/schedules/{ref}/pause").json()
        )

    def resume_schedule(self, ref: str) -> SchedulePublic:
        return SchedulePublic.model_validate(
            self.request("POST", f"/v1/schedules/{ref}/resume").json()
        )

    def run_schedule(self, ref: str) -> ScheduleRunPublic:
        """Fire now, outside the cron; the run's job (or why there is none)."""
        return ScheduleRunPublic.model_validate(
            self.request("POST", f"/v1/schedules/{ref}/run").json()
        )

    def latest_run(self, ref: str) -> ScheduleRunPublic:
        return ScheduleRunPublic.model_validate(
            self.request("GET", f"/v1/schedules/{ref}/runs/latest").json()
        )

    # -- OpenAI-compatible batches ---------------------------------------------------------
    def batches(self, limit: int = 20) -> Iterator[dict[str, Any]]:
        """OpenAI-compatible batches, newest first, a page at a time."""
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": limit}
            if after:
                params["after"] = after
            page = self.request("GET", "/v1/batches", params=params).json()
            yield from page["data"]
            if not page.get("has_more") or not page["data"]:
                return
            after = page["data"][-1]["id"]

    def batch(self, batch_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/batches/{batch_id}").json()
        return result
