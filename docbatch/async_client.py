"""``AsyncClient``: the ``Client`` of ``docbatch.client`` for asyncio code (httpx.AsyncClient).

The same methods, awaited, and the same errors::

    async with AsyncClient("http://docbatch:8000", api_key="dbk_...") as client:
        job = await client.submit(["first text", "second text"], tasks=["tags"])
        await job.wait()
        async for line in job.iter_results():
            print(line.custom_id, line.results["tags"].output)
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from docbatch.client import (
    ResultLine,
    error_for,
    read_parquet,
    submission,
    unreachable,
    write_atomically,
)
from docbatch.client import defaults as _defaults
from docbatch.schema.models import JobPublic
from docbatch.schema.statuses import TERMINAL_JOB_STATUSES


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    # The multipart body is built by a plain generator (it reads files); httpx's async
    # transport wants an async one.
    for chunk in chunks:
        yield chunk


class AsyncJob:
    """A job on the api; ``data`` is its last-read ``JobPublic``."""

    def __init__(self, client: AsyncClient, data: JobPublic) -> None:
        self.client = client
        self.data = data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.data, name)

    def __repr__(self) -> str:
        return f"<AsyncJob {self.data.id} {self.data.status}>"

    @property
    def done(self) -> bool:
        return self.data.status in TERMINAL_JOB_STATUSES

    async def refresh(self) -> AsyncJob:
        self.data = (await self.client.job(self.data.id)).data
        return self

    async def wait(
        self,
        poll_seconds: float = 1.0,
        timeout: float | None = None,
        on_update: Callable[[JobPublic], None] | None = None,
    ) -> JobPublic:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            await self.refresh()
            if on_update is not None:
                on_update(self.data)
            if self.done:
                return self.data
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.data.id} is still {self.data.status}")
            await asyncio.sleep(poll_seconds)

    async def iter_results(self, errors_only: bool = False) -> AsyncIterator[ResultLine]:
        buffer = b""
        async for chunk in self.client.results(self.data.id, errors_only=errors_only):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    yield ResultLine.model_validate_json(line)
        if buffer.strip():
            yield ResultLine.model_validate_json(buffer)

    async def errors(self) -> list[ResultLine]:
        return [line async for line in self.iter_results(errors_only=True)]

    async def download(self, path: str | Path, format: str = "ndjson") -> Path:
        target = Path(path)
        chunks = [c async for c in self.client.results(self.data.id, format=format)]
        # The file is written (and renamed into place) only once the body is complete.
        await asyncio.to_thread(write_atomically, target, chunks)
        return target

    async def to_arrow(self) -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            path = await self.download(Path(tmp) / "results.parquet", "parquet")
            return await asyncio.to_thread(read_parquet, path)

    async def to_pandas(self) -> Any:
        return (await self.to_arrow()).to_pandas()

    async def cancel(self) -> JobPublic:
        self.data = await self.client.cancel(self.data.id)
        return self.data


class AsyncClient:
    """An asyncio client of one docbatch api (``async with`` closes it)."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, timeout: float = 60.0
    ) -> None:
        self.base_url, key = _defaults(base_url, api_key)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = await self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from None
        if resp.status_code >= 400:
            raise error_for(resp)
        return resp

    async def submit(
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
    ) -> AsyncJob:
        options = {
            "name": name,
            "priority": priority,
            "webhook_url": webhook_url,
            "reuse_results": reuse_results,
            "idempotency_key": idempotency_key,
        }
        headers, body = submission(tasks, documents, paths, options)
        resp = await self.request("POST", "/v1/jobs", content=_aiter(body), headers=headers)
        return AsyncJob(self, JobPublic.model_validate(resp.json()))

    async def job(self, job_id: str) -> AsyncJob:
        resp = await self.request("GET", f"/v1/jobs/{job_id}")
        return AsyncJob(self, JobPublic.model_validate(resp.json()))

    async def jobs(
        self, status: str | None = None, page_size: int = 50, limit: int | None = None
    ) -> AsyncIterator[AsyncJob]:
        before: str | None = None
        seen = 0
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if status:
                params["status"] = status
            if before:
                params["before"] = before
            page = (await self.request("GET", "/v1/jobs", params=params)).json()["data"]
            for raw in page:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield AsyncJob(self, JobPublic.model_validate(raw))
            if len(page) < page_size:
                return
            before = page[-1]["id"]

    async def cancel(self, job_id: str) -> JobPublic:
        resp = await self.request("POST", f"/v1/jobs/{job_id}/cancel")
        return JobPublic.model_validate(resp.json())

    async def results(
        self, job_id: str, errors_only: bool = False, format: str = "ndjson"
    ) -> AsyncIterator[bytes]:
        path = f"/v1/jobs/{job_id}/{'errors' if errors_only else 'results'}"
        params = {"format": format} if format != "ndjson" and not errors_only else None
        try:
            async with self.http.stream("GET", path, params=params) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise error_for(resp)
                async for chunk in resp.aiter_bytes():
                    yield chunk
        except httpx.TransportError as exc:
            raise unreachable(self.base_url, exc) from None
