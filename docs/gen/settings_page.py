"""reference/settings.md: every field of ``Settings`` (and of a task's ``ModelConfig`` and
``GenerationConfig``) with its environment variable, type and default, and the comment
written above it in ``schema/settings.py`` (or its ``Field`` description)."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def _comments(model: type[BaseModel]) -> dict[str, str]:
    """field name -> the comment lines right above its declaration in the class body."""
    found: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(model).splitlines():
        body = line[4:] if line.startswith("    ") and not line.startswith("     ") else None
        if body is not None and body.startswith("#"):
            pending.append(body.lstrip("#").strip())
            continue
        declared = re.match(r"(\w+)\s*:", body or "")
        if declared and declared.group(1) in model.model_fields:
            found[declared.group(1)] = " ".join(pending)
        if not line.strip().startswith("#"):  # code or a blank line ends a comment block
            pending = []
    return found


def _type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "")
    return text.replace("docbatch.schema.settings.", "")


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(see below)"
    if isinstance(value, dict) and value and isinstance(next(iter(value.values())), BaseModel):
        return "(see below)"
    if isinstance(value, str):
        return f"`{value}`" if value else "(empty)"
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(model: type[BaseModel], env: str, skip: frozenset[str] = frozenset()) -> list[str]:
    comments = _comments(model)
    rows = [
        "| variable | type | default | what |",
        "|---|---|---|---|",
    ]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        what = field.description or ""
        if comments.get(name):
            what = f"{comments[name]} {what}".strip() if what else comments[name]
        rows.append(
            f"| `{env}{name.upper()}` | `{_cell(_type(field.annotation))}` | "
            f"{_cell(_default(field))} | {_cell(what)} |"
        )
    return rows


def render() -> str:
    from docbatch.schema.settings import GenerationConfig, ModelConfig, Settings

    config = Settings.model_config
    prefix = str(config.get("env_prefix") or "")
    nested = str(config.get("env_nested_delimiter") or "__")
    models = Settings.model_fields["models"].default_factory()  # type: ignore[misc]
    lines = [
        "# Settings reference",
        "",
        "Generated from `Settings` (`schema/settings.py`) at every docs build. Every setting is",
        f"an environment variable with the prefix `{prefix}`; nested values use `{nested}`",
        f"(`{prefix}MODELS{nested}EMBED{nested}MODEL=/models/minilm`). Lists and dicts are",
        "JSON (`DOCBATCH_SCHEDULE_FOLDER_ROOTS='[\"/data/inbox\"]'`). The file `.env.example`",
        "at the top of the repository lists them all with their defaults, ready to copy.",
        "",
        "## Where settings come from",
        "",
        "Highest first: the process environment; a `.env` file in the working directory (the",
        "same `KEY=value` lines; with Docker Compose every docbatch service reads the `.env`",
        "beside `docker-compose.yml`); the TOML file named by `DOCBATCH_CONFIG` (field names",
        "as keys, nested settings as tables: `unit_tokens = 4096`, `[models.embed]`,",
        '`model = "/models/e5"`); the default.',
        "",
        "`docbatch config show` prints every setting's effective value and its source, by",
        "variable name, with API keys and URL passwords masked (`--changed` for only what is",
        "not a default, `--format json` for tools). `docbatch config check` exits 0, or 2 with",
        "one line per problem. Every docbatch process refuses to start on an unknown",
        "`DOCBATCH_*` name (a typo such as `DOCBATCH_MODELS__EMBED__MODLE` or",
        "`DOCBATCH_MODELS__CLASIFY__MODEL`), naming the closest valid one, and on a value its",
        "setting cannot take, naming the variable. Names starting `DOCBATCH_TEST_`,",
        "`DOCBATCH_BENCH_`, `DOCBATCH_CHAOS_`, `DOCBATCH_CI_` and `DOCBATCH_FAKE_` belong to",
        "the test suite and benchmarks and are not checked.",
        "",
        "## Settings",
        "",
        *_table(Settings, prefix),
        "",
        "## Models, per task",
        "",
        f"`{prefix}MODELS{nested}<TASK>{nested}<FIELD>` configures the worker of one task; "
        "`<TASK>` is one of "
        + ", ".join(f"`{t.upper()}`" for t in models)
        + ". Setting one field keeps the defaults of all the others.",
        "",
        *_table(
            ModelConfig, f"{prefix}MODELS{nested}<TASK>{nested}", skip=frozenset({"generation"})
        ),
        "",
        "The handler each task runs by default:",
        "",
        "| task | handler |",
        "|---|---|",
        *(f"| `{task}` | `{m.handler}` |" for task, m in models.items()),
        "",
        "## Generation, per task",
        "",
        f"`{prefix}MODELS{nested}<TASK>{nested}GENERATION{nested}<FIELD>`: decoding defaults "
        "of the seq2seq and causal handlers (summarize, translate, generate); unset means the "
        "handler's own default, and a job's own values win.",
        "",
        *_table(GenerationConfig, f"{prefix}MODELS{nested}<TASK>{nested}GENERATION{nested}"),
        "",
    ]
    return "\n".join(lines)
