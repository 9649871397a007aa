"""A small HTTP client for the v1 API (what the CLI's submit/status/results use)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx


class ApiError(RuntimeError):
    pass


class Client:
    def __init__(self, base_url: str, api_key: str = "", timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def _check(self, resp: httpx.Response) -> httpx.Response:
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise ApiError(
                f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {detail}"
            )
        return resp

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
            resp = self.http.post("/v1/jobs", params=params, content=body, headers=headers)
        return self._check(resp).json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/jobs/{job_id}")).json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.post(f"/v1/jobs/{job_id}/cancel")).json()

    def results(self, job_id: str, errors_only: bool = False) -> Iterator[bytes]:
        path = f"/v1/jobs/{job_id}/{'errors' if errors_only else 'results'}"
        with self.http.stream("GET", path) as resp:
            self._check(resp)
            yield from resp.iter_bytes()

    # -- schedules ----------------------------------------------------------------------
    def create_schedule(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._check(self.http.post("/v1/schedules", json=body)).json()

    def schedules(self) -> dict[str, Any]:
        return self._check(self.http.get("/v1/schedules")).json()

    def schedule(self, ref: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/schedules/{ref}")).json()

    def delete_schedule(self, ref: str) -> None:
        self._check(self.http.delete(f"/v1/schedules/{ref}"))
