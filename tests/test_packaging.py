"""The wheel as a user installs it, into fresh virtual environments outside the repository.

- ``docbatch[client]`` (the base install) holds no torch, transformers or database drivers,
  and its client commands work against a real api: ``--version``, ``status --help``, and a
  job submitted, waited for and downloaded.
- The full wheel (``docbatch[all]``) beside PyPI's ``schema`` package: the wheel holds the
  one top-level name ``docbatch`` (the layers are ``docbatch.api``, ``docbatch.domain``,
  ``docbatch.schema`` and ``docbatch.worker``), so neither shadows the other.

Cost: the packages come from uv's cache, pinned to what the running environment has
(``uv pip freeze`` as constraints, the same pip sources as ``make install``), so no
download is needed on a machine where ``make install`` ran: building the wheel takes about
4 s, the client venv 1 s and the full one (torch included, hard-linked from the cache) 3 s
on a 2-core x86_64 VM.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import ROOT
from tests.procs import ApiProcess

UV = Path(sys.executable).parent / "uv"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# What a client-only install must not contain (distribution names, as uv lists them).
HEAVY = {"torch", "transformers", "sentence-transformers", "sqlalchemy", "celery", "fastapi"}

pytestmark = pytest.mark.skipif(
    not UV.exists(), reason=f"uv not at {UV} (`make install` puts it in .venv)"
)


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Any:
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{args}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


def _user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing pointing into the repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    return {**env, **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (the build writes nothing in the repo)."""
    src = tmp_path_factory.mktemp("src")
    for name in ["pyproject.toml", "README.md", "LICENSE"]:
        shutil.copy(ROOT / name, src / name)
    for layer in ["api", "domain", "schema", "worker", "docbatch"]:
        shutil.copytree(
            ROOT / layer, src / layer, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    dist = tmp_path_factory.mktemp("dist")
    # --no-build-isolation: the running environment's setuptools, nothing downloaded.
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(dist), str(src)],
        cwd=src,
    )
    (built,) = dist.glob("docbatch-*.whl")
    return built


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """uv options that install what this environment already has (so from uv's cache)."""
    folder = tmp_path_factory.mktemp("pins")
    freeze = _run([str(UV), "pip", "freeze", "--python", sys.executable], cwd=folder).stdout
    pins = [line for line in freeze.splitlines() if "==" in line and "docbatch" not in line]
    (folder / "constraints.txt").write_text("\n".join(pins) + "\n")
    pip = Path(sys.executable).parent / "pip"
    sources = _run([sys.executable, str(ROOT / "ops/uv_args.py"), str(pip)], cwd=folder)
    return [*sources.stdout.split(), "-c", str(folder / "constraints.txt")]


def _venv(where: Path, requirements: list[str], pinned: list[str]) -> Path:
    _run([str(UV), "venv", "-q", "--python", sys.executable, str(where)], cwd=where.parent)
    python = where / "bin" / "python"
    _run([str(UV), "pip", "install", "-q", "--python", str(python), *pinned, *requirements], where)
    return where / "bin"


def _installed(bin_dir: Path) -> set[str]:
    listed = _run(
        [str(UV), "pip", "list", "--format", "json", "--python", str(bin_dir / "python")],
        cwd=bin_dir,
    ).stdout
    return {p["name"].lower() for p in json.loads(listed)}


def test_the_wheel_holds_one_top_level_name_and_the_licence(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"docbatch", f"docbatch-{VERSION}.dist-info"}, tops
    assert f"docbatch-{VERSION}.dist-info/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"docbatch-{VERSION}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata
    # Ranges, never exact pins, in what an install resolves.
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    pinned = [r for r in requires if "==" in r.split(";")[0]]
    assert requires and not pinned, pinned


@pytest.fixture(scope="module")
def client_bin(wheel, pinned, tmp_path_factory) -> Path:
    return _venv(
        tmp_path_factory.mktemp("venvs") / "client",
        [f"docbatch[client] @ {wheel.as_uri()}"],
        pinned,
    )


def test_the_client_install_has_no_model_stack_and_answers_version_and_help(client_bin, tmp_path):
    installed = _installed(client_bin)
    assert "docbatch" in installed
    assert not installed & HEAVY, installed & HEAVY
    env = _user_env()
    version = _run([str(client_bin / "docbatch"), "--version"], tmp_path, env)
    assert version.stdout.strip() == f"docbatch {VERSION}"
    helped = _run([str(client_bin / "docbatch"), "status", "--help"], tmp_path, env)
    assert helped.stdout.startswith("usage: docbatch status")
    imported = _run(
        [str(client_bin / "python"), "-c", "import docbatch; print(docbatch.__version__)"],
        tmp_path,
        env,
    )
    assert imported.stdout.strip() == VERSION


@pytest.fixture(scope="module")
def live_api(api_key: str, workers) -> Iterator[tuple[str, str]]:
    api = ApiProcess({}, migrate=False).wait_ready()
    yield api.url, api_key
    api.stop()


def test_the_client_install_submits_waits_and_downloads(client_bin, live_api, tmp_path):
    """The client commands import nothing the client install lacks: a real job through a
    real api and worker, from the client venv."""
    url, key = live_api
    env = _user_env(DOCBATCH_API_URL=url, DOCBATCH_API_KEY=key)
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        json.dumps({"custom_id": "a", "text": "Open a socket and send bytes over TCP."})
        + "\n"
        + json.dumps({"custom_id": "b", "text": "Add two integers and return the sum."})
        + "\n"
    )
    docbatch = str(client_bin / "docbatch")
    submitted = _run([docbatch, "submit", str(docs), "--task", "tags", "--wait"], tmp_path, env)
    job = submitted.stdout.strip().splitlines()[0]
    status = json.loads(_run([docbatch, "status", job, "--format", "json"], tmp_path, env).stdout)
    assert status["status"] == "completed", status
    _run([docbatch, "results", job, "-o", str(tmp_path / "out.jsonl")], tmp_path, env)
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == ["a", "b"]
    assert all(x["results"]["tags"]["status"] == "succeeded" for x in lines), lines
    # The Python client, from the same install: typed results, and no model stack loaded.
    code = (
        "import sys\n"
        "from docbatch import Client\n"
        "job = Client().submit(['Open a socket.', 'Add two integers.'], tasks=['tags'])\n"
        "final = job.wait(poll_seconds=0.2)\n"
        "lines = list(job.iter_results())\n"
        "assert not {'torch', 'sqlalchemy', 'celery'} & set(sys.modules), sys.modules\n"
        "print(final.status, [x.custom_id for x in lines], lines[0].results['tags'].status)\n"
    )
    used = _run([str(client_bin / "python"), "-c", code], tmp_path, env)
    assert used.stdout.split() == ["completed", "['0',", "'1']", "succeeded"], used.stdout


def test_the_full_wheel_installs_beside_pypi_schema(wheel, pinned, tmp_path):
    """One import root: PyPI's ``schema`` and ``docbatch.schema`` live side by side."""
    bin_dir = _venv(tmp_path / "full", [f"docbatch[all] @ {wheel.as_uri()}", "schema"], pinned)
    assert {"schema", "torch", "docbatch"} <= _installed(bin_dir)
    env = _user_env(DOCBATCH_DATABASE_URL="sqlite://", DOCBATCH_BROKER_URL="memory://")
    helped = _run([str(bin_dir / "docbatch"), "--help"], tmp_path, env)
    assert helped.stdout.startswith("usage: docbatch")
    code = (
        "import schema, docbatch.api, docbatch.domain, docbatch.schema, docbatch.worker\n"
        "import docbatch.api.app, docbatch.worker.app, docbatch.domain.jobs\n"
        "from docbatch.schema.settings import Settings\n"
        "assert hasattr(schema, 'Schema'), schema.__file__  # PyPI's schema, not ours\n"
        "for m in (docbatch.api, docbatch.domain, docbatch.schema, docbatch.worker):\n"
        "    assert '/site-packages/docbatch/' in m.__file__, m.__file__\n"
        "print(schema.Schema(int).validate(3), Settings().queue_prefix)\n"
    )
    out = _run([str(bin_dir / "python"), "-c", code], tmp_path, env)
    assert out.stdout.split() == ["3", "docbatch"]
