"""reference/rest.md and reference/openapi.json: the api's OpenAPI document, as the running
api serves it at ``/openapi.json``, rendered one operation per section."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")


def _spec() -> dict[str, Any]:
    # Importing the app registers the metrics collector, which reads the jobs table once
    # (prometheus_client's auto_describe): point it at an empty in-memory database and keep
    # its "table missing" log out of the build output. The document does not depend on it.
    os.environ["DOCBATCH_DATABASE_URL"] = "sqlite://"
    os.environ["DOCBATCH_BROKER_URL"] = "memory://"
    quiet = logging.getLogger("docbatch.api")
    was, quiet.disabled = quiet.disabled, True
    try:
        from docbatch.api.app import app
    finally:
        quiet.disabled = was
    return app.openapi()


def render_json() -> str:
    return json.dumps(_spec(), indent=2) + "\n"


def _anchor(name: str) -> str:
    return "schema-" + "".join(c if c.isalnum() else "-" for c in name.lower())


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return " \\| ".join(_type(s) for s in schema[key])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    return f"{kind}" + (f" ({schema['format']})" if "format" in schema else "")


def _cell(text: Any) -> str:
    return str(text or "").replace("|", "\\|").replace("\n", " ")


def _operation(path: str, method: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        lines += [f"**{op['summary']}**", ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | required | what |", "|---|---|---|---|---|"]
        for p in params:
            lines.append(
                f"| `{p['name']}` | {p['in']} | {_type(p.get('schema', {}))} | "
                f"{'yes' if p.get('required') else 'no'} | {_cell(p.get('description'))} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        lines += ["Request body" + (" (required)" if body.get("required") else "") + ":", ""]
        for media, content in body.get("content", {}).items():
            lines.append(f"- `{media}`: {_type(content.get('schema', {}))}")
        lines.append("")
    lines += ["| status | what |", "|---|---|"]
    for status, response in op.get("responses", {}).items():
        schemas = [
            _type(c["schema"]) for c in response.get("content", {}).values() if c.get("schema")
        ]
        what = _cell(response.get("description"))
        if schemas and schemas[0] != "any":
            what += f" ({', '.join(schemas)})"
        lines.append(f"| {status} | {what} |")
    return [*lines, ""]


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name} {{#{_anchor(name)}}}", ""]
    if schema.get("description"):
        lines += [schema["description"].strip(), ""]
    props = schema.get("properties", {})
    if props:
        required = set(schema.get("required", []))
        lines += ["| field | type | required | what |", "|---|---|---|---|"]
        for field, sub in props.items():
            lines.append(
                f"| `{field}` | {_type(sub)} | {'yes' if field in required else 'no'} | "
                f"{_cell(sub.get('description'))} |"
            )
        lines.append("")
    elif "enum" in schema:
        lines += ["One of " + ", ".join(f"`{v}`" for v in schema["enum"]) + ".", ""]
    return lines


def render() -> str:
    spec = _spec()
    lines = [
        "# REST API reference",
        "",
        "Generated from the api's OpenAPI document at every docs build; a running api serves",
        "the same document at `/openapi.json` and an interactive page at `/docs`. Download:",
        "[openapi.json](openapi.json). Every endpoint except `/healthz`, `/readyz`, `/metrics`",
        "and the `/ui` pages needs `Authorization: Bearer <key>`; errors and limits:",
        "[Limits and error codes](limits.md).",
        "",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                tag = (item[method].get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append((path, method, item[method]))
    for tag, ops in by_tag.items():
        lines += [f"## {tag}", ""]
        for path, method, op in ops:
            lines += _operation(path, method, op)
    lines += ["## Schemas", ""]
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        lines += _schema(name, schema)
    return "\n".join(lines)
