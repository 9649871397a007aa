"""The OpenAI Batch API's ingest and export, next to /v1/jobs' (``make bench`` figure
``openai_batch``): a 100,000-line batch input file through the official ``openai`` client.

in:  ``files.create`` (each line checked as it is stored) + ``batches.create`` (the lines
     become the documents of one job), lines/s and the api's peak RSS;
out: ``files.content`` of the output file once the batch is done, lines/s and RSS growth;
     and the one-time ``finalize`` (rendering the output and error files into blobs).
The model is the no-op handler, so the figures are the api's and Postgres' own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.env import rss_mb
from docbatch.schema.tables import TERMINAL_JOB_STATUSES

ENDPOINT = "/v1/docbatch/summarize"


def write_requests(path: Path, docs_path: Path) -> int:
    """A batch input file with one summarize request per generated document."""
    n = 0
    with docs_path.open(encoding="utf-8") as src, path.open("w", encoding="utf-8") as out:
        for line in src:
            doc = json.loads(line)
            request = {
                "custom_id": doc["custom_id"],
                "method": "POST",
                "url": ENDPOINT,
                "body": {"text": doc["text"]},
            }
            out.write(json.dumps(request) + "\n")
            n += 1
    return n


def run(bench: Any, row: Any, docs_path: Path) -> None:
    import openai

    from bench.cluster import Api, RssSampler, start_workers, stop_all

    requests = write_requests(bench.tmp / "batch-requests.jsonl", docs_path)
    size_mb = (bench.tmp / "batch-requests.jsonl").stat().st_size / 1e6
    api = Api(
        bench.env, name="api-openai", extra={"DOCBATCH_UNIT_TOKENS": str(bench.args.unit_tokens)}
    )
    client = openai.OpenAI(
        base_url=f"{api.url}/v1", api_key=bench.env.api_key, max_retries=0, timeout=1200
    )
    try:
        with RssSampler(api.pid) as ingest_rss:
            t0 = time.monotonic()
            with (bench.tmp / "batch-requests.jsonl").open("rb") as fh:
                uploaded = client.files.create(file=("requests.jsonl", fh), purpose="batch")
            upload_s = time.monotonic() - t0
            batch = client.batches.create(
                input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
            )
            ingest_s = time.monotonic() - t0
        hwm = rss_mb(api.pid)[1]
        rate = requests / ingest_s
        row(
            "openai batch ingest (lines/s)",
            rate,
            ">= 5000",
            rate >= 5000,
            f"{requests} lines ({size_mb:.0f} MB): files.create {upload_s:.2f}s (checked and "
            f"stored) + batches.create {ingest_s - upload_s:.2f}s (job, documents, units)",
        )
        row(
            "openai batch ingest (api peak RSS MB)",
            hwm,
            "<= 300",
            hwm <= 300,
            f"VmHWM {hwm:.0f} MB, sampled peak {ingest_rss.peak:.0f} MB",
        )
        extra = {
            "DOCBATCH_TORCH_THREADS": "1",
            "DOCBATCH_MODELS__SUMMARIZE__HANDLER": "bench.handlers:NoopSummarizeHandler",
        }
        workers = start_workers(bench.env, "summarize", bench.args.noop_workers, extra, "noop-s")
        try:
            while (
                api.job(batch.model_extra["docbatch_job_id"])["status"] not in TERMINAL_JOB_STATUSES
            ):
                time.sleep(0.5)
        finally:
            stop_all(workers)
        from docbatch.schema.settings import Settings
        from docbatch.worker.batches import tick

        t0 = time.monotonic()
        # What the beat's batch tick runs (docbatch.batch_tick), here, timed.
        assert tick(Settings(database_url=bench.env.database_url)) == 1
        finalize_s = time.monotonic() - t0
        done = client.batches.retrieve(batch.id)
        assert done.status == "completed", done
        assert done.request_counts.completed == requests, done.request_counts
        row(
            "openai batch finalize (lines/s)",
            requests / finalize_s,
            "report",
            None,
            f"output and error files rendered from the results into blobs once, {finalize_s:.2f}s",
        )
        before = rss_mb(api.pid)[0]
        with RssSampler(api.pid) as export_rss:
            t0 = time.monotonic()
            got = 0
            with client.files.with_streaming_response.content(done.output_file_id) as resp:
                for line in resp.iter_lines():
                    got += bool(line)
            export_s = time.monotonic() - t0
        assert got == requests, got
        row(
            "openai batch export (lines/s)",
            requests / export_s,
            ">= 20000",
            requests / export_s >= 20000,
            f"files.content(output_file_id), {requests} lines in {export_s:.2f}s",
        )
        growth = export_rss.peak - before
        row(
            "openai batch export (api RSS growth MB)",
            growth,
            "constant (< 50)",
            growth < 50,
            f"RSS {before:.0f} MB before, sampled peak {export_rss.peak:.0f} MB",
        )
    finally:
        client.close()
        api.stop()
