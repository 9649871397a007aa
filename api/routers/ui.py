"""The dashboard at /ui: server-rendered page shells whose JS polls the v1 JSON api.

No build step and nothing fetched from outside: two HTML pages, one script, one
stylesheet (api/ui/). The pages carry no data themselves, so they need no auth;
the script sends the API key the user saved (localStorage) as ``Authorization:
Bearer`` on every request, the same way any other client does.
"""

from __future__ import annotations

import html
import json
from functools import cache
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from docbatch.schema.tables import EXTRACT
from docbatch.schema.tasks import EXTRACT_COLOR, TASK_KINDS

UI = Path(__file__).resolve().parents[1] / "ui"
# Each task's colour (schema/tasks.py), read by app.js from the page's <body>.
TASK_COLORS = json.dumps({**{t: k.color for t, k in TASK_KINDS.items()}, EXTRACT: EXTRACT_COLOR})
router = APIRouter(prefix="/ui", tags=["ui"], include_in_schema=False)


@cache
def _page(name: str) -> str:
    return (UI / name).read_text(encoding="utf-8")


def _render(name: str, title: str, **values: str) -> HTMLResponse:
    body = _page(name)
    for key, value in values.items():
        body = body.replace("{{" + key + "}}", html.escape(value, quote=True))
    layout = _page("layout.html").replace("{{title}}", html.escape(title))
    layout = layout.replace("{{task_colors}}", html.escape(TASK_COLORS, quote=True))
    return HTMLResponse(layout.replace("{{body}}", body))


@router.get("", response_class=HTMLResponse)
def jobs_page() -> HTMLResponse:
    return _render("jobs.html", "docbatch · jobs")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str) -> HTMLResponse:
    return _render("job.html", f"docbatch · {job_id}", job_id=job_id)


@router.get("/schedules", response_class=HTMLResponse)
def schedules_page() -> HTMLResponse:
    return _render("schedules.html", "docbatch · schedules")


@router.get("/usage", response_class=HTMLResponse)
def usage_page() -> HTMLResponse:
    return _render("usage.html", "docbatch · usage")


def mount_static(app: FastAPI) -> None:
    app.mount("/ui/static", StaticFiles(directory=UI / "static"), name="ui-static")
