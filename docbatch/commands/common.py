"""Options and helpers every command group shares.

``client_parent()`` is the ``--api-url``/``--api-key`` parent of every command that talks
to the api; ``client(args)`` builds the ``docbatch.Client`` from them (flags win over
``DOCBATCH_API_URL``/``DOCBATCH_API_KEY``). ``add_task_options`` adds ``--task`` and its
helpers; ``task_specs(args)`` turns them into the api's task list.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from docbatch.exitcodes import EPILOG
from docbatch.schema.errors import DocbatchError
from docbatch.schema.tasks import TASKS

TASK_NAMES = ", ".join(TASKS)


class UsageError(DocbatchError):
    """Arguments that cannot work together; exit code 2."""


def client_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("api")
    group.add_argument(
        "--api-url",
        metavar="URL",
        help="the docbatch api, e.g. http://docbatch:8000 (default: $DOCBATCH_API_URL, "
        "else http://127.0.0.1:8000)",
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        help="an API key from `docbatch keys create` (default: $DOCBATCH_API_KEY)",
    )
    return parent


def epilog(*examples: str, exit_codes: bool = True) -> str:
    text = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    return text + ("\n\n" + EPILOG if exit_codes else "")


def command(
    sub: Any, name: str, help: str, examples: list[str], client: bool = True, **kwargs: Any
) -> argparse.ArgumentParser:
    """A sub-command with its help, an example epilog and (for api commands) the api
    options."""
    parents = [client_parent()] if client else []
    return sub.add_parser(  # type: ignore[no-any-return]
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog=epilog(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=parents,
        **kwargs,
    )


def client(args: argparse.Namespace) -> Any:
    from docbatch.client import Client

    url, key = getattr(args, "api_url", None), getattr(args, "api_key", None)
    if url is None or key is None:
        from docbatch.schema.settings import get_settings

        s = get_settings()
        url = url if url is not None else s.api_url
        key = key if key is not None else s.api_key
    return Client(url, key)


class _Ordered(argparse.Action):
    """``--task`` and ``--model`` in the order given: a ``--model`` names the deployment of
    the ``--task`` before it (``--task classify --model sentiment --task classify``)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        items = list(getattr(namespace, "task", None) or [])
        if self.dest == "model":
            if not items:
                parser.error("--model names the deployment of the --task before it")
            items[-1] = (items[-1][0], values)
        else:
            items.append((values, None))
        namespace.task = items


def add_task_options(sp: argparse.ArgumentParser) -> None:
    group = sp.add_argument_group("tasks")
    group.add_argument(
        "--task",
        action=_Ordered,
        metavar="TASK",
        help=f"a task to run, repeatable: {TASK_NAMES}; or a JSON task such as "
        '\'{"type":"tags","labels":["a","b"]}\'',
    )
    group.add_argument(
        "--model",
        action=_Ordered,
        metavar="DEPLOYMENT",
        help="the deployment (named model) of the --task before it; default: the task's "
        "default deployment",
    )
    group.add_argument(
        "--labels", metavar="A,B", help="comma-separated labels for --task tags or classify"
    )
    group.add_argument(
        "--question",
        action="append",
        metavar="TEXT",
        help="a question for --task ask (repeat for more)",
    )
    group.add_argument(
        "--target-lang", metavar="LANG", help="target language for --task translate, e.g. de"
    )


def task_specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = []
    for item in args.task or []:
        raw, model = item if isinstance(item, tuple) else (item, None)
        spec = json.loads(raw) if raw.lstrip().startswith("{") else {"type": raw}
        if model:
            spec["model"] = model
        if spec["type"] in ("tags", "classify") and args.labels:
            spec["labels"] = [x.strip() for x in args.labels.split(",") if x.strip()]
        if spec["type"] == "ask" and args.question:
            spec.setdefault("questions", list(args.question))
        if spec["type"] == "translate" and args.target_lang:
            spec.setdefault("target_lang", args.target_lang)
        specs.append(spec)
    if not specs:
        raise UsageError(f"give at least one --task ({TASK_NAMES})")
    return specs
