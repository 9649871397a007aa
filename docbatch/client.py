"""A small HTTP client for the v1 API (what the CLI's submit/status/results use).

Every failure is an ``ApiError`` whose message is one line a user can act on: the
status and the api's reason (``404 job job_x not found``), or that the api cannot be
reached at the configured URL.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from docbatch.schema.errors import DocbatchError


class ApiError(DocbatchError):
    """The api answered with an error, or could not be reached."""


_HINTS = {401: " (set DOCBATCH_API_KEY to a key from `docbatch keys create`)"}


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", " ")


def _multipart(
    boundary: str, fields: dict[str, str], files: list[tuple[str, Path]]
) -> Iterator[bytes]:
    for key, value in fields.items():
        yield (
            (f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n').encode()
            + value.encode()
            + b"\r\n"
        )
    for name, path in files:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{_quote(name)}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                yield block
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


class Client:
    def __init__(self, base_url: str, api_key: str = "", timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def _unreachable(self, exc: httpx.TransportError) -> ApiError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return ApiError(f"cannot reach the api at {self.base_url} (set DOCBATCH_API_URL)")
        reason = str(exc) or type(exc).__name__
        return ApiError(f"lost the connection to the api at {self.base_url}: {reason}")

    def _check(self, resp: httpx.Response) -> httpx.Response:
        if resp.status_code >= 400:
            resp.read()  # a streamed response has not read its body yet
            try:
                body = resp.json()
            except ValueError:
                body = {}
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict) and "field" in error:
                line = f" (line {error['line']})" if error.get("line") is not None else ""
                detail = f"{error['field']}{line}: {error.get('message', '')}"
            elif isinstance(body, dict) and isinstance(body.get("detail"), str):
                detail = body["detail"]
            else:
                detail = resp.text[:200] or resp.reason_phrase
            detail = " ".join(detail.split())  # one line
            raise ApiError(f"{resp.status_code} {detail}{_HINTS.get(resp.status_code, '')}")
        return resp

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._check(self.http.request(method, path, **kwargs))
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def submit_ndjson(
        self,
        path: Path,
        tasks: list[dict[str, Any]],
        name: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        params = {"tasks": json.dumps(tasks)}
        if name:
            params["name"] = name
        headers = {"Content-Type": "application/x-ndjson"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        with path.open("rb") as body:
            resp = self._send("POST", "/v1/jobs", params=params, content=body, headers=headers)
        return resp.json()

    def submit_files(
        self,
        files: list[tuple[str, Path]],
        tasks: list[dict[str, Any]],
        name: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One multipart upload of ``(name, path)`` files (any kind: NDJSON, PDFs, ...),
        streamed from disk one file at a time."""
        boundary = secrets.token_hex(16)
        fields = {"tasks": json.dumps(tasks), **({"name": name} if name else {})}
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        body = _multipart(boundary, fields, files)
        return self._send("POST", "/v1/jobs", content=body, headers=headers).json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._send("GET", f"/v1/jobs/{job_id}").json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._send("POST", f"/v1/jobs/{job_id}/cancel").json()

    def results(self, job_id: str, errors_only: bool = False) -> Iterator[bytes]:
        path = f"/v1/jobs/{job_id}/{'errors' if errors_only else 'results'}"
        try:
            with self.http.stream("GET", path) as resp:
                self._check(resp)
                yield from resp.iter_bytes()
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    # -- admin (the admin key) ------------------------------------------------------------
    def create_key(self, tenant: str) -> dict[str, Any]:
        return self._send("POST", "/v1/admin/keys", json={"tenant": tenant}).json()

    def keys(self, tenant: str | None = None) -> dict[str, Any]:
        params = {"tenant": tenant} if tenant else {}
        return self._send("GET", "/v1/admin/keys", params=params).json()

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self._send("DELETE", f"/v1/admin/keys/{key_id}").json()

    # -- schedules ----------------------------------------------------------------------
    def create_schedule(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", "/v1/schedules", json=body).json()

    def schedules(self) -> dict[str, Any]:
        return self._send("GET", "/v1/schedules").json()

    def schedule(self, ref: str) -> dict[str, Any]:
        return self._send("GET", f"/v1/schedules/{ref}").json()

    def delete_schedule(self, ref: str) -> None:
        self._send("DELETE", f"/v1/schedules/{ref}")
