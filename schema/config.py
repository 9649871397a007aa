"""Where settings come from, checked: the environment, ``.env`` and ``DOCBATCH_CONFIG``.

Precedence, highest first: a ``DOCBATCH_*`` environment variable, the same line in
``.env`` (in the working directory), the TOML file named by ``DOCBATCH_CONFIG``, the
default. ``load_settings()`` is what ``get_settings()`` calls; it refuses what would
otherwise be silently ignored::

    DOCBATCH_MODELS__EMBED__MODLE=x  ->  SettingsError: unknown setting
        DOCBATCH_MODELS__EMBED__MODLE; did you mean DOCBATCH_MODELS__EMBED__MODEL?
    DOCBATCH_UNIT_TOKENS=lots        ->  SettingsError: DOCBATCH_UNIT_TOKENS='lots':
        Input should be a valid integer, unable to parse string as an integer

``describe()`` gives every setting's effective value and where it came from (what
``docbatch config show`` prints), secrets masked.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ValidationError

from docbatch.schema.errors import DocbatchError

PREFIX = "DOCBATCH_"
DELIMITER = "__"
# DOCBATCH_* variables that are not settings: the config file's own name, the compose
# image tag, and the families the tests, benchmarks and CI read for themselves.
NOT_SETTINGS = frozenset({"DOCBATCH_CONFIG", "DOCBATCH_VERSION"})
NOT_SETTINGS_PREFIXES = (
    "DOCBATCH_TEST_",
    "DOCBATCH_BENCH_",
    "DOCBATCH_CHAOS_",
    "DOCBATCH_CI_",
    "DOCBATCH_FAKE_",
)
# Fields whose values are secrets (besides every *_key, *_password and *_secret), and URL
# fields whose password part is one.
SECRET_FIELDS = frozenset({"api_key", "admin_key"})


class SettingsError(DocbatchError):
    """A setting that is unknown, or has a value its field refuses; the message names the
    variable (or the config file key) and, for a typo, the closest valid name.
    ``problems`` holds each one alone."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Sources:
    """The raw ``DOCBATCH_*`` values of each source, by upper-case variable name."""

    environ: dict[str, str]
    dotenv: dict[str, str]
    dotenv_path: Path | None
    toml: dict[str, Any]
    toml_path: Path | None


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (``export`` and quotes allowed, ``#`` comments), as python-dotenv
    reads them for pydantic-settings; only the names matter here."""
    from dotenv import dotenv_values

    return {k.upper(): v or "" for k, v in dotenv_values(path).items() if k}


def gather(environ: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Sources:
    environ = os.environ if environ is None else environ
    env = {k.upper(): v for k, v in environ.items() if k.upper().startswith(PREFIX)}
    dotenv = dotenv if dotenv is not None else Path(".env")
    dot = read_dotenv(dotenv) if dotenv.is_file() else {}
    dot = {k: v for k, v in dot.items() if k.startswith(PREFIX)}
    config = env.get("DOCBATCH_CONFIG") or dot.get("DOCBATCH_CONFIG") or ""
    toml: dict[str, Any] = {}
    toml_path = Path(config) if config else None
    if toml_path is not None:
        try:
            toml = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"DOCBATCH_CONFIG={config}: no such file") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"DOCBATCH_CONFIG={config}: {exc}") from None
    return Sources(env, dot, dotenv if dot else None, toml, toml_path)


# -- the valid names -------------------------------------------------------------------


def _settings_cls() -> type[BaseModel]:
    from docbatch.schema.settings import Settings

    return Settings


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _dict_keys(field: str) -> tuple[str, ...] | None:
    """The keys a dict setting may have (None: any)."""
    if field == "models":
        from docbatch.schema.tasks import TASKS

        return TASKS
    return None


def _unknown_at(parts: list[str], model: type[BaseModel]) -> int | None:
    """Index of the first part of ``parts`` that names nothing under ``model``."""

    def walk(i: int, annotation: Any, field: str) -> int | None:
        annotation = _strip_optional(annotation)
        if i == len(parts):
            return None
        sub = _model_of(annotation)
        if sub is not None:
            name = parts[i]
            if name not in sub.model_fields:
                return i
            return walk(i + 1, sub.model_fields[name].annotation, name)
        origin = typing.get_origin(annotation)
        if origin is dict:
            keys = _dict_keys(field)
            if keys is not None and parts[i] not in keys:
                return i
            value_type = typing.get_args(annotation)[1]
            if value_type is Any:
                return None
            return walk(i + 1, value_type, field)
        return i  # a scalar or a list has nothing below it

    return walk(0, model, "")


def valid_names() -> list[str]:
    """Every variable name a setting answers to (nested model fields included)."""
    names: list[str] = []

    def walk(path: list[str], annotation: Any, field: str) -> None:
        annotation = _strip_optional(annotation)
        sub = _model_of(annotation)
        if sub is not None:
            for name, info in sub.model_fields.items():
                walk([*path, name], info.annotation, name)
            if path:
                names.append(PREFIX + DELIMITER.join(path).upper())
            return
        names.append(PREFIX + DELIMITER.join(path).upper())
        if typing.get_origin(annotation) is dict:
            keys = _dict_keys(field)
            value_type = typing.get_args(annotation)[1]
            for key in keys or ():
                walk([*path, key], value_type, field)

    walk([], _settings_cls(), "")
    return names


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else " (docs: reference/settings)"


def _json_paths(value: Any, path: list[str]) -> Iterator[list[str]]:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            yield from _json_paths(inner, [*path, str(key).lower()])
    else:
        yield path


def unknown_settings(sources: Sources) -> list[str]:
    """One message per unknown name, in the environment, ``.env`` or the TOML file."""
    model = _settings_cls()
    candidates = valid_names()
    problems: list[str] = []

    def check(parts: list[str], label: str, as_var: bool) -> None:
        at = _unknown_at(parts, model)
        if at is None:
            return
        if as_var:
            problems.append(f"unknown setting {label}{_suggest(label, candidates)}")
        else:
            var = PREFIX + DELIMITER.join(parts).upper()
            hint = _suggest(var, candidates).replace(PREFIX, "").replace(DELIMITER, ".").lower()
            problems.append(f"unknown setting {label}{hint}")

    for where, values in (("", sources.environ), (" (.env)", sources.dotenv)):
        for var, raw in sorted(values.items()):
            if var in NOT_SETTINGS or var.startswith(NOT_SETTINGS_PREFIXES):
                continue
            parts = var[len(PREFIX) :].lower().split(DELIMITER)
            at = _unknown_at(parts, model)
            if at is not None:
                problems.append(f"unknown setting {var}{where}{_suggest(var, candidates)}")
                continue
            # A JSON value of a nested setting (DOCBATCH_MODELS='{"embed": {"modle": ..}}').
            if _model_of(_strip_optional(_annotation_at(parts))) or _is_dict(parts):
                try:
                    decoded = json.loads(raw)
                except ValueError:
                    continue  # the value check names it
                for inner in _json_paths(decoded, []):
                    if inner and _unknown_at([*parts, *inner], model) is not None:
                        key = ".".join(inner)
                        full = PREFIX + DELIMITER.join([*parts, *inner]).upper()
                        hint = _suggest(full, candidates)
                        problems.append(f"unknown key {key!r} in {var}{where}{hint}")
    if sources.toml_path is not None:
        for parts in _json_paths(sources.toml, []):
            parts = [p.lower() for p in parts]
            if _unknown_at(parts, model) is not None:
                check(parts, f"{'.'.join(parts)} in {sources.toml_path}", as_var=False)
    return problems


def _annotation_at(parts: list[str]) -> Any:
    annotation: Any = _settings_cls()
    for part in parts:
        annotation = _strip_optional(annotation)
        sub = _model_of(annotation)
        if sub is not None:
            annotation = sub.model_fields[part].annotation
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
    return annotation


def _is_dict(parts: list[str]) -> bool:
    return typing.get_origin(_strip_optional(_annotation_at(parts))) is dict


# -- values ------------------------------------------------------------------------------


def _variable_for(loc: tuple[Any, ...], sources: Sources) -> str:
    """The variable (or config key) that set the value at ``loc``."""
    parts = [str(p) for p in loc]
    for n in range(len(parts), 0, -1):
        var = PREFIX + DELIMITER.join(parts[:n]).upper()
        for values, where in ((sources.environ, ""), (sources.dotenv, " (.env)")):
            if var in values:
                inner = ".".join(parts[n:])
                return f"{var}{where}={values[var]!r}" + (f" (at {inner})" if inner else "")
    if sources.toml_path is not None:
        return f"{'.'.join(parts)} in {sources.toml_path}"
    return PREFIX + DELIMITER.join(parts).upper()


def _bare(message: str) -> str:
    return message.removeprefix("Value error, ")


def explain(exc: ValidationError, sources: Sources) -> SettingsError:
    lines = [
        # A check across settings (loc ()) names its variables in its own message.
        f"{_variable_for(e['loc'], sources)}: {e['msg']}" if e["loc"] else _bare(e["msg"])
        for e in exc.errors()
    ]
    return SettingsError(*lines)


def load_settings(**overrides: Any) -> Any:
    """``Settings()`` from every source, refusing unknown names and naming the variable
    of a bad value; raises ``SettingsError``."""
    settings_cls = _settings_cls()
    sources = gather()
    problems = unknown_settings(sources)
    if problems:
        raise SettingsError(*problems)
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise explain(exc, sources) from None


# -- docbatch config show ---------------------------------------------------------------


def mask(field: str, value: Any) -> Any:
    """Secrets as ``***``: API keys whole, the password part of a URL."""
    if not isinstance(value, str) or not value:
        return value
    if field in SECRET_FIELDS or field.endswith(("_key", "_password", "_secret")):
        return "***"
    if "://" in value:
        parts = urlsplit(value)
        if parts.password:
            host = parts.hostname or ""
            if parts.port:
                host = f"{host}:{parts.port}"
            user = f"{parts.username}:***@" if parts.username else ":***@"
            return urlunsplit(parts._replace(netloc=user + host))
    return value


def _source_of(parts: list[str], sources: Sources) -> str:
    for values, label in ((sources.environ, "environment"), (sources.dotenv, ".env")):
        for n in range(len(parts), 0, -1):
            var = PREFIX + DELIMITER.join(parts[:n]).upper()
            if var not in values:
                continue
            if n == len(parts):
                return label
            try:  # a JSON value holding this path
                inner: Any = json.loads(values[var])
                for p in parts[n:]:
                    inner = inner[p]
                return f"{label} ({var})"
            except (ValueError, KeyError, TypeError):
                continue
    if sources.toml_path is not None:
        inner = sources.toml
        try:
            for p in parts:
                inner = inner[p]
            return str(sources.toml_path)
        except (KeyError, TypeError):
            pass
    return "default"


def describe(settings: Any, sources: Sources | None = None) -> list[dict[str, Any]]:
    """``[{"variable", "value", "source"}]`` for every setting, nested model fields as
    their ``DOCBATCH_MODELS__TASK__FIELD`` variables; secrets masked."""
    sources = sources or gather()
    rows: list[dict[str, Any]] = []

    def walk(path: list[str], value: Any) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk([*path, name], getattr(value, name))
            return
        if path[0] == "models" and isinstance(value, dict):
            for key in sorted(value):
                walk([*path, key], value[key])
            return
        rows.append(
            {
                "variable": PREFIX + DELIMITER.join(path).upper(),
                "value": mask(path[-1], value),
                "source": _source_of(path, sources),
            }
        )

    for name in type(settings).model_fields:
        walk([name], getattr(settings, name))
    return rows
