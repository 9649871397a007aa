"""``/v1/responses`` as a batch endpoint on ``generate`` deployments.

A request line's body becomes one ``generate`` document (``to_generate``) and its result
becomes a Response object (``response_body``). What is honoured: ``input`` (a string, or
a list of message items with ``role`` and text ``content``), ``instructions`` (a system
message), ``max_output_tokens``, ``temperature``, ``top_p`` and ``text.format`` of type
``text``. A string ``input`` is a user message on a model with a chat template and the
prompt as it is on a base model (``chat: "auto"``), as ``/v1/completions`` treats
``prompt``. What a stateless batch cannot honour (tools, reasoning, stored
conversations) is that line's error, saying so.
"""

from __future__ import annotations

import json
from typing import Any

# Accepted and without effect here (the batch's output file is what is kept).
IGNORED = {"user", "store", "metadata", "service_tier", "parallel_tool_calls", "truncation"}
SUPPORTED = {"model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "text"}
UNSUPPORTED = {
    "tools": "tools (function calling) are not supported",
    "tool_choice": "tools (function calling) are not supported",
    "reasoning": "reasoning options are not supported by these models",
    "previous_response_id": "previous_response_id needs stored responses; a batch is "
    "stateless: send the whole conversation as input",
    "conversation": "stored conversations are not supported; send the whole conversation as input",
    "background": "background is not supported in a batch",
    "stream": "stream is not supported in a batch",
    "prompt": "stored prompt templates are not supported; send the prompt as input",
    "include": "include is not supported",
    "top_logprobs": "logprobs are not supported",
}
ROLES = ("system", "developer", "user", "assistant")


class Unsupported(ValueError):
    """What a line asks that cannot be done here, and the parameter that asks it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param, self.message = param, message


def to_generate(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(the document's text, the ``generate`` params) of a Responses body; raises
    Unsupported for what this line cannot do."""
    for key in sorted(body):
        if key in UNSUPPORTED and body[key] not in (None, False, [], {}):
            raise Unsupported(key, UNSUPPORTED[key])
    unknown = sorted(set(body) - SUPPORTED - IGNORED - set(UNSUPPORTED))
    if unknown:
        raise Unsupported(unknown[0], f"parameter {unknown[0]!r} is not supported")
    fmt = ((body.get("text") or {}).get("format") or {}).get("type", "text")
    if fmt != "text":
        raise Unsupported("text.format", f"text.format {fmt!r} is not supported; only 'text'")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise Unsupported("instructions", "instructions must be a string")
    # Everything of the prompt goes in the document (lines of one batch share params).
    messages = [{"role": "system", "content": instructions}] if instructions else []
    raw = body.get("input")
    if isinstance(raw, str) and raw:
        messages.append({"role": "user", "content": raw})
    elif isinstance(raw, list) and raw:
        for i, item in enumerate(raw):
            message = _message(item)
            if isinstance(message, str):
                raise Unsupported(f"input[{i}]", message)
            messages.append(message)
    else:
        raise Unsupported("input", "input must be a non-empty string or list of message items")
    text = json.dumps(messages, ensure_ascii=False)
    # Through the chat template when the model has one; on a base model the contents,
    # joined, are the prompt as is (as /v1/completions treats prompt).
    params: dict[str, Any] = {"input": "messages", "chat": "auto"}
    if body.get("max_output_tokens") is not None:
        params["max_new_tokens"] = body["max_output_tokens"]
    # OpenAI samples at temperature 1 unless told otherwise; 0 is greedy.
    params["temperature"] = body.get("temperature", 1.0)
    if body.get("top_p") is not None:
        params["top_p"] = body["top_p"]
    return text, params


def _message(item: Any) -> dict[str, str] | str:
    """A message item as ``{role, content}``, or what is wrong with it."""
    if not isinstance(item, dict) or item.get("type", "message") != "message":
        kind = item.get("type") if isinstance(item, dict) else type(item).__name__
        return f"only message items are supported, not {kind!r}"
    role = item.get("role")
    if role not in ROLES:
        return f"role must be one of {', '.join(ROLES)}"
    content = item.get("content")
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") in ("input_text", "output_text")):
                kind = part.get("type") if isinstance(part, dict) else part
                return f"only text content is supported, not {kind!r}"
            parts.append(str(part.get("text", "")))
        content = "".join(parts)
    if not isinstance(content, str):
        return "content must be a string or a list of input_text parts"
    return {"role": "system" if role == "developer" else role, "content": content}


def response_body(
    rid: str, model: str | None, created: int | None, out: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    """OpenAI's Response object from a ``generate`` result (``out``: text, finish_reason,
    usage) and the params it ran with."""
    usage = out.get("usage") or {}
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    text = str(out.get("text", ""))
    cut = out.get("finish_reason") == "length"
    sampling = params.get("sampling") or {}
    return {
        "id": f"resp_{rid}",
        "object": "response",
        "created_at": created,
        "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "error": None,
        "model": model,
        "instructions": None,
        "max_output_tokens": params.get("max_new_tokens"),
        "temperature": sampling.get("temperature", params.get("temperature")),
        "top_p": sampling.get("top_p", params.get("top_p")),
        "output": [
            {
                "type": "message",
                "id": f"msg_{rid}",
                "status": "incomplete" if cut else "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "output_text": text,
        "parallel_tool_calls": False,
        "tool_choice": "none",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        },
    }
