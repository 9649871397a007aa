"""reference/cli.md: every ``docbatch`` command's ``--help``, walked from the argparse parser
(``docbatch.cli.build_parser``), so the page always says what the installed CLI says."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

WIDTH = "100"  # argparse wraps help at $COLUMNS; fixed, so the page does not depend on a terminal


def _commands(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[argparse.ArgumentParser, str]]:
    """(parser, one-line help) for ``parser`` and every sub-command below it, depth first."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help or "" for a in action._choices_actions}
        seen: set[int] = set()
        for name, sub in action.choices.items():
            if id(sub) in seen:  # an alias of a command already listed
                continue
            seen.add(id(sub))
            yield sub, helps.get(name, "")
            yield from _commands(sub)


def render() -> str:
    os.environ["COLUMNS"] = WIDTH
    from docbatch.cli import build_parser

    parser = build_parser()
    lines = [
        "# CLI reference",
        "",
        "Generated from the `docbatch` command's own argument parser at every docs build: each",
        "section is what `--help` prints. Client commands (`submit`, `status`, `results`, ...)",
        "talk to the api at `DOCBATCH_API_URL` with `DOCBATCH_API_KEY`; the others start",
        "processes or talk to the database (see [Settings](settings.md)).",
        "",
        "## docbatch",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
        "",
    ]
    for sub, summary in _commands(parser):
        lines += [f"## {sub.prog}", ""]
        if summary:
            lines += [summary[0].upper() + summary[1:] + ".", ""]
        lines += ["```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)
