"""Checks on strings and parsed JSON that every input model shares (plain functions, no
pydantic): what Postgres cannot store or a JSON response cannot carry, and what a person
would not call text."""

from __future__ import annotations

import math
import string
import unicodedata
from typing import Any


def string_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored and sent back as UTF-8 JSON (Postgres text and jsonb
    refuse NUL; a lone surrogate from a ``"\\ud800"`` escape has no UTF-8 form), or None."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 (it holds a lone surrogate such as \\ud800)"
    return None


def is_blank(value: str) -> bool:
    """Only whitespace and invisible format characters (zero-width space, joiners, BOM)."""
    first = value[:1]
    if first and first.isprintable() and not first.isspace():  # ordinary text: one step
        return False
    # Stops at the first visible character.
    return not any(not (c.isspace() or unicodedata.category(c) == "Cf") for c in value)


def depth_message(max_depth: int) -> str:
    return f"is nested deeper than {max_depth} levels (DOCBATCH_MAX_JSON_DEPTH)"


def too_deep(value: Any, max_depth: int) -> bool:
    """Whether a parsed JSON value nests lists/objects deeper than ``max_depth``."""
    level: list[Any] = [value]
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            return True
        children: list[Any] = []
        for item in level:
            for child in item.values() if isinstance(item, dict) else item:
                if isinstance(child, (dict, list)):  # noqa: UP038 - the tuple is faster
                    children.append(child)
        level = children
    return False


def json_problem(value: Any, max_depth: int) -> str | None:
    """Why a parsed JSON value cannot be stored as jsonb and sent back, or None: nesting
    deeper than ``max_depth``, a bad string (key or value), a NaN or infinite number."""
    if not isinstance(value, dict | list):
        value = [value]
    if too_deep(value, max_depth):
        return depth_message(max_depth)
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
            stack.extend(item.keys())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            problem = string_problem(item)
            if problem:
                return f"{problem}: {item[:40]!r}"
        elif isinstance(item, float) and not math.isfinite(item):
            return f"holds {item}, which JSON cannot represent"
    return None


TEMPLATE_EXAMPLE = "This example is {}."


def template_problem(template: str) -> str | None:
    """Why ``template`` is not a label template for ``str.format(label)``, or None.

    Exactly one bare ``{}`` and no other replacement field: a format spec or a field name
    (``"{:>999999999}{}"``, ``"{0.__class__}"``) would let a request allocate memory or
    reach attributes in a worker. ``{{`` and ``}}`` are literal braces."""
    try:
        fields = [
            (name, spec, conversion)
            for _, name, spec, conversion in string.Formatter().parse(template)
            if name is not None
        ]
    except ValueError as exc:  # a lone "{" or "}"
        return f"is not a valid template ({exc}); write a literal brace as {{{{ or }}}}"
    if fields != [("", "", None)]:
        return (
            f"must contain {{}} exactly once (where the label goes) and no other "
            f"{{...}} field, e.g. {TEMPLATE_EXAMPLE!r}"
        )
    return None
