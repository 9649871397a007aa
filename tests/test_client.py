"""``docbatch.Client``/``AsyncClient`` and the CLI's job commands against a real api and a
real worker (the fake summarize handler on private queues): typed results, the exit codes a
scheduler acts on, ``--format`` and ``--api-url``."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from docbatch import ApiError, ApiUnreachable, AsyncClient, Client
from docbatch.schema.models import JobPublic, ResultLine
from tests.fakeworkers import fake_worker_env
from tests.fixtures import ROOT, WorkerProcess
from tests.procs import ApiProcess, free_port


@pytest.fixture(scope="module")
def live(api_key: str) -> Iterator[tuple[str, str]]:
    prefix = f"cl{secrets.token_hex(3)}"
    api = ApiProcess({"DOCBATCH_QUEUE_PREFIX": prefix}, migrate=False)
    worker = WorkerProcess("summarize", env=fake_worker_env(prefix))
    api.wait_ready()
    worker.wait_ready()
    yield api.url, api_key
    worker.stop()
    api.stop()


def cli(*args: str, url: str | None, key: str, cwd: Path = ROOT) -> Any:
    env = {k: v for k, v in os.environ.items() if k not in ("DOCBATCH_API_URL",)}
    env["DOCBATCH_API_KEY"] = key
    if url is not None:
        env["DOCBATCH_API_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "docbatch.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _docs(tmp_path: Path, *texts: str) -> Path:
    path = tmp_path / f"docs-{secrets.token_hex(3)}.jsonl"
    path.write_text(
        "".join(json.dumps({"custom_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    return path


def test_client_submits_waits_and_reads_typed_results(live, tmp_path):
    url, key = live
    with Client(url, key) as client:
        job = client.submit(
            [
                {"custom_id": "a", "text": "open a socket", "metadata": {"team": "net"}},
                {"custom_id": "b", "text": "a POISON pill"},
                "plain text",
            ],
            tasks=["summarize"],
            name="client-test",
        )
        assert isinstance(job.data, JobPublic) and job.status == "queued" or job.status
        final = job.wait(poll_seconds=0.2, timeout=120)
        assert final.status == "completed_with_errors"
        assert final.counts["summarize"].succeeded == 2 and final.counts["summarize"].failed == 1
        lines = list(job.iter_results())
        assert all(isinstance(x, ResultLine) for x in lines)
        assert [x.custom_id for x in lines] == ["a", "b", "2"]
        assert lines[0].results["summarize"].output == {"summary": "OPEN A SOCKET"}
        assert lines[0].metadata == {"team": "net"}
        assert lines[0].results["summarize"].model == {"id": "fake/upper", "revision": "v1"}
        errors = job.errors()
        assert [e.custom_id for e in errors] == ["b"]
        assert "poison" in (errors[0].results["summarize"].error or "")

        ndjson = job.download(tmp_path / "out.jsonl")
        assert [json.loads(x)["custom_id"] for x in ndjson.read_text().splitlines()] == [
            "a",
            "b",
            "2",
        ]
        parquet = job.download(tmp_path / "out.parquet", format="parquet")
        assert pq.read_table(parquet).column("custom_id").to_pylist() == ["a", "b", "2"]
        table = job.to_arrow()
        assert table.num_rows == 3 and "summarize_status" in table.column_names

        # Files and folders go up in the same multipart upload.
        folder = tmp_path / "inbox"
        folder.mkdir()
        (folder / "one.md").write_text("first note")
        (folder / "two.md").write_text("second note")
        from_files = client.submit(paths=[folder], tasks="summarize")
        assert from_files.wait(poll_seconds=0.2, timeout=120).status == "completed"
        assert sorted(x.custom_id for x in from_files.iter_results()) == ["one.md", "two.md"]

        # jobs(): newest first, across pages.
        listed = [j.id for j in client.jobs(page_size=1, limit=2)]
        assert listed == [from_files.id, job.id]

        with pytest.raises(ApiError) as missing:
            client.job("job_nope")
        assert missing.value.status_code == 404 and "job_nope" in str(missing.value)


def test_client_submits_a_dataframe(live):
    pd = pytest.importorskip("pandas")
    url, key = live
    frame = pd.DataFrame({"custom_id": ["x", "y"], "text": ["alpha", "beta"]})
    with Client(url, key) as client:
        job = client.submit(frame, tasks=["summarize"])
        job.wait(poll_seconds=0.2, timeout=120)
        df = job.to_pandas()
    assert list(df["custom_id"]) == ["x", "y"]
    assert [json.loads(o)["summary"] for o in df["summarize_output"]] == ["ALPHA", "BETA"]


def test_async_client(live):
    url, key = live

    async def go() -> tuple[str, list[str], list[str]]:
        async with AsyncClient(url, key) as client:
            job = await client.submit(["one", "two POISON"], tasks=["summarize"])
            final = await job.wait(poll_seconds=0.2, timeout=120)
            ids = [line.custom_id async for line in job.iter_results()]
            failed = [e.custom_id for e in await job.errors()]
            recent = [j.id async for j in client.jobs(limit=1)]
            assert recent == [job.id]
            return final.status, ids, failed

    status, ids, failed = asyncio.run(go())
    assert (status, ids, failed) == ("completed_with_errors", ["0", "1"], ["1"])


def test_an_api_that_is_not_there_is_api_unreachable():
    with pytest.raises(ApiUnreachable) as err, Client(f"http://127.0.0.1:{free_port()}", "k") as c:
        c.job("job_x")
    assert "cannot reach the api" in str(err.value)


def test_exit_codes_follow_the_job(live, tmp_path):
    url, key = live
    ok = cli(
        "submit",
        str(_docs(tmp_path, "fine", "also fine")),
        "--task",
        "summarize",
        "--wait",
        "--quiet",
        url=url,
        key=key,
    )
    assert ok.returncode == 0, ok.stderr
    job_ok = ok.stdout.strip()
    assert "completed: 2 documents" in ok.stderr

    partial = cli(
        "submit",
        str(_docs(tmp_path, "fine", "POISON")),
        "--task",
        "summarize",
        "--wait",
        "--quiet",
        url=url,
        key=key,
    )
    assert partial.returncode == 3, partial.stderr
    job_partial = partial.stdout.strip()

    failed = cli(
        "submit",
        str(_docs(tmp_path, "POISON", "POISON too")),
        "--task",
        "summarize",
        "--wait",
        "--quiet",
        url=url,
        key=key,
    )
    assert failed.returncode == 4, failed.stderr

    # status --wait exits with the same codes (it exited 0 on `failed` before).
    assert cli("status", job_ok, "--wait", "--quiet", url=url, key=key).returncode == 0
    assert cli("status", job_partial, "--wait", "--quiet", url=url, key=key).returncode == 3
    assert (
        cli("status", failed.stdout.strip(), "--wait", "--quiet", url=url, key=key).returncode == 4
    )
    # Without --wait, showing a job is a success whatever its status.
    assert cli("status", failed.stdout.strip(), url=url, key=key).returncode == 0

    usage = cli("submit", str(_docs(tmp_path, "x")), url=url, key=key)
    assert usage.returncode == 2 and "give at least one --task" in usage.stderr
    bad_flag = cli("status", url=url, key=key)
    assert bad_flag.returncode == 2
    down = cli("status", job_ok, "--api-url", f"http://127.0.0.1:{free_port()}", url=url, key=key)
    assert down.returncode == 5


def test_formats_flags_and_the_jobs_commands(live, tmp_path):
    url, key = live
    done = cli(
        "submit",
        str(_docs(tmp_path, "good", "bad POISON")),
        "--task",
        "summarize",
        "--name",
        "fmt",
        "--wait",
        "--quiet",
        "--format",
        "json",
        "--api-url",
        url,
        url="http://127.0.0.1:9",
        key=key,
    )  # the flag wins
    assert done.returncode == 3, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "completed_with_errors" and job["name"] == "fmt"
    job_id = job["id"]

    listed = cli("jobs", "list", "--format", "jsonl", "--limit", "5", url=url, key=key)
    rows = [json.loads(x) for x in listed.stdout.splitlines()]
    assert rows[0]["id"] == job_id and rows[0]["status"] == "completed_with_errors"
    table = cli("jobs", "list", "--limit", "5", url=url, key=key).stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "NAME", "STATUS", "DOCUMENTS"]
    assert table[1].split()[:3] == [job_id, "fmt", "completed_with_errors"]

    shown = json.loads(cli("jobs", "show", job_id, "--format", "json", url=url, key=key).stdout)
    assert shown["counts"]["summarize"]["failed"] == 1
    human = cli("jobs", "show", job_id, url=url, key=key).stdout
    assert f"id:          {job_id}" in human and "summarize" in human

    errors = cli("jobs", "errors", job_id, "--format", "jsonl", url=url, key=key)
    assert [json.loads(x)["custom_id"] for x in errors.stdout.splitlines()] == ["d1"]
    assert "poison" in json.loads(errors.stdout.splitlines()[0])["error"]

    out = tmp_path / "r.parquet"
    got = cli("results", job_id, "-o", str(out), url=url, key=key)  # format from the suffix
    assert got.returncode == 0, got.stderr
    assert pq.read_table(out).num_rows == 2
    nd = cli("results", job_id, "--format", "ndjson", url=url, key=key)
    assert [json.loads(x)["custom_id"] for x in nd.stdout.splitlines()] == ["d0", "d1"]

    cancelled = cli("cancel", job_id, "--format", "jsonl", url=url, key=key)
    assert json.loads(cancelled.stdout)["status"] == "completed_with_errors"  # already over

    batches = cli("batches", "list", "--format", "json", url=url, key=key)
    assert batches.returncode == 0 and isinstance(json.loads(batches.stdout), list)


def test_every_option_has_help_and_every_command_an_example():
    import argparse

    from docbatch.cli import build_parser

    def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in set(action.choices.values()):
                    yield from walk(sub)

    missing = []
    for parser in walk(build_parser()):
        leaf = not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        if parser.prog != "docbatch" and "examples:" not in (parser.epilog or ""):
            missing.append(f"{parser.prog}: no examples")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            if not action.help:
                missing.append(f"{parser.prog} {action.option_strings or action.dest}")
        if leaf and "--api-key" in parser.format_help():
            assert "--api-url" in parser.format_help()
    assert not missing, missing
    helped = build_parser().format_help()
    assert "3  completed with errors" in helped and "5  the api is unreachable" in helped


def test_errors_as_parquet_is_a_usage_error(tmp_path):
    done = cli("results", "job_x", "--errors", "-o", str(tmp_path / "e.parquet"), url=None, key="k")
    assert done.returncode == 2 and "--errors gives NDJSON only" in done.stderr
    assert not (tmp_path / "e.parquet").exists()
