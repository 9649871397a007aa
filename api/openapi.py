"""The OpenAPI document: adds what FastAPI cannot see because ``POST /v1/jobs`` reads its
body as a stream (the JSON ``JobCreate`` body, the NDJSON body and its query parameters)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from docbatch.schema.models import (
    JOB_OPTIONS,
    PRIORITY_MAX,
    PRIORITY_MIN,
    BatchCreate,
    JobCreate,
)

_DESCRIPTIONS = {
    "tasks": "'tags,summarize' or a JSON list of task objects",
    "name": "a name for the job",
    "priority": f"{PRIORITY_MIN} (default) to {PRIORITY_MAX}; higher runs first",
    "webhook_url": "http(s) URL called when the job ends",
    "reuse_results": "true: copy results of identical earlier documents instead of recomputing",
    "retention_days": "delete the job this many days after it ends (at most the tenant's)",
    "keep_originals": "false: drop the files' original bytes once their text is extracted",
}
_SCHEMAS: dict[str, dict[str, Any]] = {
    "priority": {"type": "integer", "minimum": PRIORITY_MIN, "maximum": PRIORITY_MAX},
    "reuse_results": {"type": "boolean"},
    "retention_days": {"type": "integer", "minimum": 1, "maximum": 36500},
    "keep_originals": {"type": "boolean"},
}
# Every job option JobCreate has, as a query parameter (NDJSON) or a form field (multipart).
NDJSON_PARAMS = [(name, "NDJSON body only: " + _DESCRIPTIONS[name]) for name in JOB_OPTIONS]


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        job = JobCreate.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(job.pop("$defs", {}))
        components["JobCreate"] = job
        # POST /v1/batches reads its body itself too (a 422 in OpenAI's envelope).
        batch = BatchCreate.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(batch.pop("$defs", {}))
        components["BatchCreate"] = batch
        schema["paths"]["/v1/batches"]["post"]["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/BatchCreate"}}
            },
        }
        post = schema["paths"]["/v1/jobs"]["post"]
        post["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "description": "one part per file (PDF, DOCX, HTML, e-mail, "
                                "zip/tar archive, text, or NDJSON documents); repeat for more",
                            },
                            **{
                                name: _SCHEMAS.get(name, {"type": "string"})
                                for name, _ in NDJSON_PARAMS
                            },
                        },
                        "required": ["file"],
                    }
                },
                "application/x-ndjson": {
                    "schema": {
                        "type": "string",
                        "description": 'one {"custom_id", "text", "metadata"?} object per line',
                    }
                },
            },
        }
        post.setdefault("parameters", []).extend(
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": _SCHEMAS.get(name, {"type": "string"}),
                "description": text,
            }
            for name, text in NDJSON_PARAMS
        )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
