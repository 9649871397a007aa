"""Prompt assembly for ``generate``: templates, few-shot examples and chat messages.

Pure functions over strings and a tokenizer, shared by every generate backend
(transformers and vLLM get the same token ids) and by the OpenAI-compatible
``/v1/chat/completions`` path, which renders a request's ``messages`` with
``render_chat``. Example::

    >>> render_template("Q: {text}\\nA:", "2+2?", [{"text": "1+1?", "output": " 2"}])
    'Q: 1+1?\\nA: 2\\n\\nQ: 2+2?\\nA:'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from docbatch.schema.errors import PermanentError

SLOT = "{text}"
DEFAULT_TEMPLATE = SLOT
DEFAULT_SEPARATOR = "\n\n"
ROLES = ("system", "user", "assistant", "developer", "tool")


def fill(template: str, text: str) -> str:
    """``template`` with ``text`` at every ``{text}``; other braces stay as written (no
    ``str.format``, so JSON or code in a template needs no escaping)."""
    return template.replace(SLOT, text)


def render_template(
    template: str,
    text: str,
    examples: list[dict[str, str]] | None = None,
    separator: str = DEFAULT_SEPARATOR,
) -> str:
    """The few-shot examples (template filled with each example's text, then its output),
    then the template filled with ``text``, joined by ``separator``."""
    shots = [fill(template, ex["text"]) + ex["output"] for ex in examples or []]
    return separator.join([*shots, fill(template, text)])


def parse_messages(raw: str | list[Any]) -> list[dict[str, str]]:
    """OpenAI chat ``messages`` (a JSON string or a list) as plain role/content dicts.

    Content may be a string or a list of ``{"type": "text", "text": ...}`` parts (the
    other part types need a multimodal model and are refused).
    """
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PermanentError(
                f"input 'messages': the document text is not JSON ({exc.msg}); send a JSON "
                'list such as [{"role": "user", "content": "Hello"}]'
            ) from None
    if not isinstance(raw, list) or not raw:
        raise PermanentError("input 'messages': the document text must be a non-empty JSON list")
    out = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            raise PermanentError(
                f"messages[{i}]: needs a role, one of {', '.join(ROLES)}, and a content"
            )
        content = msg.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if not (isinstance(part, dict) and part.get("type") == "text"):
                    raise PermanentError(f"messages[{i}].content: only text parts are supported")
                parts.append(str(part.get("text", "")))
            content = "".join(parts)
        if not isinstance(content, str):
            raise PermanentError(f"messages[{i}].content must be a string or text parts")
        out.append({"role": str(msg["role"]), "content": content})
    return out


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """``messages`` rendered with the model's chat template, ending with the assistant's
    turn opened (or continuing a final assistant message, as transformers' pipeline does).

    The rendered text already holds the template's special tokens (BOS and the like), so
    encode it with ``add_special_tokens=False`` (``Prompt.special_tokens``).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise PermanentError(
            "the generate model has no chat template, so chat messages cannot be rendered; "
            "use an instruct/chat model or send input 'prompt' / 'text'"
        )
    continue_final = messages[-1]["role"] == "assistant"
    rendered = tokenizer.apply_chat_template(
        messages,
        tokenize=False,
        add_generation_prompt=not continue_final,
        continue_final_message=continue_final,
    )
    return str(rendered)


@dataclass(frozen=True)
class Prompt:
    """A prompt ready for a backend: its text and whether the tokenizer adds its own
    special tokens (plain text: yes, as ``tokenizer(prompt)`` does; a rendered chat
    template carries them already)."""

    text: str
    special_tokens: bool = True


def uses_chat(params: dict[str, Any], tokenizer: Any) -> bool:
    """Whether the prompt goes through the chat template: input ``messages`` always, input
    ``text`` with ``chat``; ``chat: "auto"``: when the model has one."""
    chat, mode = params.get("chat"), params.get("input", "text")
    if chat == "auto":
        return bool(getattr(tokenizer, "chat_template", None))
    return mode == "messages" or (mode == "text" and bool(chat))


def build_prompt(text: str, params: dict[str, Any], tokenizer: Any) -> Prompt:
    """The prompt for one piece of a document under a job's ``params``."""
    mode = params.get("input", "text")
    if mode == "prompt":
        return Prompt(text)
    if mode == "messages":
        messages = parse_messages(text)
        if not uses_chat(params, tokenizer):  # chat "auto" on a base model
            return Prompt("\n\n".join(m["content"] for m in messages))
        return Prompt(render_chat(tokenizer, messages), special_tokens=False)
    body = render_template(
        params.get("template") or DEFAULT_TEMPLATE,
        text,
        params.get("examples"),
        params.get("example_separator", DEFAULT_SEPARATOR),
    )
    if not uses_chat(params, tokenizer):
        return Prompt(body)
    messages = [{"role": "user", "content": body}]
    if params.get("system"):
        messages.insert(0, {"role": "system", "content": str(params["system"])})
    return Prompt(render_chat(tokenizer, messages), special_tokens=False)


def encode(tokenizer: Any, prompt: Prompt) -> list[int]:
    ids = tokenizer(
        prompt.text, add_special_tokens=prompt.special_tokens, return_attention_mask=False
    )["input_ids"]
    return list(ids)
