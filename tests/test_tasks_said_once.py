"""The task names are said once (docbatch/schema/tasks.py); every other list of tasks is
derived from it: the settings' default models, the parameter union, the CLI's help, the
dashboard's colours. No module spells the whole list out again."""

from __future__ import annotations

import re

import pytest

from docbatch.schema.tasks import TASK_KINDS, TASKS
from tests.fixtures import ROOT

pytestmark = pytest.mark.fast


def test_every_list_of_tasks_is_the_one_list():
    from docbatch.schema.models import TaskSpec, _task_names
    from docbatch.schema.settings import Settings

    assert _task_names(TaskSpec) == TASKS
    models = Settings().models
    assert tuple(models) == TASKS
    handlers = {t: k.handler for t, k in TASK_KINDS.items()}
    assert {t: m.handler for t, m in models.items()} == handlers


def test_the_cli_help_and_the_dashboard_name_every_task():
    from fastapi.testclient import TestClient

    from docbatch.api.app import create_app
    from docbatch.commands.common import TASK_NAMES

    assert ", ".join(TASKS) == TASK_NAMES
    page = TestClient(create_app()).get("/ui").text
    colors = re.search(r'data-task-colors="([^"]*)"', page)
    assert colors is not None
    for task in TASKS:
        assert f"&quot;{task}&quot;: &quot;{TASK_KINDS[task].color}&quot;" in colors.group(1)


def test_no_module_spells_the_task_list_out_again():
    # Three task names in a row, in TASKS' order, quoted or bare, is a copy of the list.
    run = r"\W+".join(TASKS[:3])
    copies = []
    for folder in ("api", "domain", "schema", "worker", "docbatch"):
        for path in (ROOT / folder).rglob("*"):
            ours = path.suffix in (".py", ".js", ".html") and path.name != "tasks.py"
            if ours and re.search(run, path.read_text(encoding="utf-8")):
                copies.append(str(path.relative_to(ROOT)))
    assert copies == [], copies
