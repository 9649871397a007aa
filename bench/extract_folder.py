"""A folder of 1,000 real files end to end: ``docbatch run <folder> --task summarize``.

    python -m bench.extract_folder --files 1000       # alone, in a temp folder
    python -m bench.run --only extract_folder          # as rows of the summary table

Writes a mixed folder (PDFs of 1-3 pages, DOCX, HTML pages with boilerplate, e-mails,
every tenth with a PDF attached, UTF-8 .txt notes and one zip of ten files; every file
unique, since docbatch reuses an earlier extraction of the same bytes), runs the
embedded default (SQLite and the filesystem broker in a work folder, no servers; an
extract worker joins the summarize worker because the folder holds files) and reads
the work folder's database afterwards. The extraction stage is timed apart from the
CPU-heavy extractive summarizer that runs beside it on the same cores: command start
-> last extract unit done, and first extract claim -> last extract unit done. For
scale, the same files go through the libraries directly in this process on one core
(bench/extract.py's direct calls). Every document must end succeeded; any that did not
is counted with its reason.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.env import ROOT
from bench.extract import (
    Prose,
    direct_docx,
    direct_eml,
    direct_html,
    direct_pdf,
    make_docx,
    make_eml,
    make_html,
    make_pdf,
)

# Shares of the folder by kind (the rest, less the zip, are .txt notes).
MIX = {"pdf": 0.35, "docx": 0.2, "html": 0.2, "eml": 0.15}
ZIP_MEMBERS = 10
TIMEOUT_S = 1800.0
TASKS = {"extract", "summarize"}  # every output line has a result of both


@dataclass
class Folder:
    root: Path
    files: int = 0
    size: int = 0  # bytes written
    by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    pdf_pages: int = 0
    # Every document the job should hold (zip members and attachments are their own).
    expected: set[str] = field(default_factory=set)
    # (kind, bytes) of every document the extract stage reads, for the direct reference.
    extractable: list[tuple[str, bytes]] = field(default_factory=list)

    def add(self, name: str, kind: str, data: bytes, *, document: bool = True) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.files += 1
        self.size += len(data)
        self.by_kind[kind] += 1
        if document:
            self.expected.add(name)
            if kind != "txt":
                self.extractable.append((kind, data))

    def sizes(self) -> str:
        kinds = ", ".join(f"{n} {k.upper()}" for k, n in self.by_kind.most_common())
        return (
            f"{self.files:,} files ({kinds}; {self.size / 1e6:.1f} MB, {self.pdf_pages} PDF "
            f"pages) -> {len(self.expected):,} documents with zip members and attachments"
        )


def write_folder(root: Path, files: int, prose: Prose | None = None) -> Folder:
    """``files`` files under ``root``, in subfolders by where such files come from."""
    prose = prose or Prose()
    folder = Folder(root)
    counts = {k: int(files * share) for k, share in MIX.items()}
    counts["txt"] = files - sum(counts.values()) - 1  # one file is the zip

    def pdf(key: str, pages: int) -> bytes:
        folder.pdf_pages += pages
        return make_pdf(prose.paragraphs(key, pages, 700))

    for i in range(counts["pdf"]):
        folder.add(f"reports/report-{i:04d}.pdf", "pdf", pdf(f"report-{i}", i % 3 + 1))
    for i in range(counts["docx"]):
        data = make_docx(f"Notes {i}", prose.paragraphs(f"notes-{i}", 3 + i % 3, 300))
        folder.add(f"notes/notes-{i:04d}.docx", "docx", data)
    for i in range(counts["html"]):
        data = make_html(f"Page {i}", prose.paragraphs(f"page-{i}", 4, 300))
        folder.add(f"web/page-{i:04d}.html", "html", data)
    for i in range(counts["eml"]):
        name = f"mail/message-{i:04d}.eml"
        attachment = None
        if i % 10 == 0:
            attached = pdf(f"attachment-{i}", 1)
            attachment = ("report.pdf", attached)
            folder.expected.add(f"{name}/report.pdf")
            folder.extractable.append(("pdf", attached))
        body = "\n\n".join(prose.paragraphs(f"message-{i}", 2 + i % 2, 300))
        folder.add(name, "eml", make_eml(f"Message {i}", body, attachment))
    for i in range(counts["txt"]):
        data = prose.text(f"memo-{i}", 800).encode()
        folder.add(f"memos/memo-{i:04d}.txt", "txt", data)
    members = {}
    for j in range(ZIP_MEMBERS):
        kind = ("pdf", "docx", "html", "txt", "eml")[j % 5]
        key = f"archived-{j}"
        if kind == "pdf":
            data = pdf(key, 2)
        elif kind == "docx":
            data = make_docx(f"Archived {j}", prose.paragraphs(key, 3, 300))
        elif kind == "html":
            data = make_html(f"Archived {j}", prose.paragraphs(key, 4, 300))
        elif kind == "eml":
            data = make_eml(f"Archived {j}", prose.text(key, 600))
        else:
            data = prose.text(key, 800).encode()
        members[f"archived/{key}.{kind}"] = data
        folder.expected.add(f"archive/inbox.zip/archived/{key}.{kind}")
        folder.extractable.append((kind, data))  # a .txt member goes through extraction
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    folder.add("archive/inbox.zip", "zip", buffer.getvalue(), document=False)
    return folder


def direct_seconds(folder: Folder) -> float:
    """The extractable documents through the libraries directly, one core."""
    direct: dict[str, Callable[[bytes], object]] = {
        "pdf": direct_pdf,
        "docx": direct_docx,
        "html": direct_html,
        "eml": direct_eml,
        "txt": lambda data: data.decode("utf-8"),
    }
    for kind, data in folder.extractable[:: max(1, len(folder.extractable) // 20)]:
        direct[kind](data)  # warm imports
    t0 = time.perf_counter()
    for kind, data in folder.extractable:
        direct[kind](data)
    return time.perf_counter() - t0


def _epoch(value: Any) -> float:
    """A timestamp column read from SQLite (an ISO string, UTC) as epoch seconds."""
    t = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def run_docbatch(tmp: Path, inbox: Path, procs: list[Any] | None = None) -> dict[str, Any]:
    """``docbatch run inbox --task summarize``, the embedded default; what it did."""
    out = tmp / "folder-out.jsonl"
    workdir = tmp / "folder-work"
    log = tmp / "docbatch-run-folder.log"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DOCBATCH_") or k == "DOCBATCH_TORCH_THREADS"
    }
    cmd = [sys.executable, "-m", "docbatch.cli", "run", str(inbox), "--task", "summarize"]
    cmd += ["-o", str(out), "--workdir", str(workdir), "--quiet"]
    started_epoch, t0 = time.time(), time.monotonic()
    with log.open("wb") as err:
        proc = subprocess.Popen(
            cmd,
            # kombu's filesystem transport writes a ./control folder: keep it in the temp dir
            cwd=tmp,
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        if procs is not None:
            procs.append(proc)  # stopped (SIGINT first) if the bench is interrupted
        try:
            code = proc.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RuntimeError(
                f"docbatch run did not finish in {TIMEOUT_S:.0f}s (a hang?): see {log} and "
                f"{workdir}/worker-*.log"
            ) from None
    wall = time.monotonic() - t0
    # 0: every document succeeded; 1: the job completed with errors (counted below).
    if code not in (0, 1) or not out.exists():
        raise RuntimeError(f"docbatch run exited {code}: see {log} and {workdir}/worker-*.log")
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{workdir / 'docbatch.db'}")
    stages: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for task, claimed, finished in conn.execute(
            text("SELECT task, claimed_at, finished_at FROM units")
        ):
            if claimed is None or finished is None:
                raise RuntimeError(f"a {task} unit never ran; see {workdir}/worker-*.log")
            a, b = _epoch(claimed), _epoch(finished)
            st = stages.setdefault(task, {"units": 0, "first": a, "last": b, "held_s": 0.0})
            st["units"] += 1
            st["first"], st["last"] = min(st["first"], a), max(st["last"], b)
            st["held_s"] += b - a  # claimed -> closed: the gaps between units are the rest
        tasks = {
            t: {"chunks": c or 0, "tokens": n or 0}
            for t, c, n in conn.execute(text("SELECT task, chunks, tokens FROM job_tasks"))
        }
    engine.dispose()
    for stage in stages.values():
        stage["first_from_start_s"] = stage["first"] - started_epoch
        stage["from_start_s"] = stage["last"] - started_epoch
        stage["span_s"] = stage["last"] - stage["first"]
    with out.open(encoding="utf-8") as fh:
        lines = [json.loads(line) for line in fh if line.strip()]
    return {"code": code, "wall_s": wall, "stages": stages, "tasks": tasks, "lines": lines}


def check(folder: Folder, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Which documents ended how, and the pages the extract stage read."""
    got = {line["custom_id"]: line["results"] for line in lines}
    failed: collections.Counter[str] = collections.Counter()
    extracted = pages = 0
    for results in got.values():
        for task, r in results.items():
            if r.get("status") != "succeeded":
                failed[f"{task}: {str(r.get('error') or r.get('status'))[:160]}"] += 1
        ex = (results.get("extract") or {}).get("output") or {}
        if ex and not ex.get("inline"):
            extracted += 1
            pages += len(ex.get("pages") or []) if ex.get("kind") == "pdf" else 1
    missing = folder.expected - set(got)
    unexpected = set(got) - folder.expected
    for results in got.values():
        for task in TASKS - set(results):
            failed[f"{task}: no result in the output"] += 1
    bad = sum(
        1
        for results in got.values()
        if set(results) != TASKS or any(r.get("status") != "succeeded" for r in results.values())
    )
    return {
        "documents": len(got),
        "not_succeeded": bad + len(missing),
        "missing": sorted(missing)[:5],
        "unexpected": sorted(unexpected)[:5],
        "reasons": failed.most_common(5),
        "extracted": extracted,
        "pages": pages,
    }


def measure(tmp: Path, files: int, procs: list[Any] | None = None) -> dict[str, Any]:
    t0 = time.monotonic()
    folder = write_folder(tmp / "inbox", files)
    print(f"   (wrote {folder.sizes()} in {time.monotonic() - t0:.1f}s)", flush=True)
    ran = run_docbatch(tmp, folder.root, procs)
    return {
        "folder": folder,
        **ran,
        **check(folder, ran["lines"]),
        "direct_s": direct_seconds(folder),
    }


def rows(m: dict[str, Any], row: Callable[..., None]) -> None:
    folder: Folder = m["folder"]
    ex, summ = m["stages"]["extract"], m["stages"]["summarize"]
    n, docs, pages = folder.files, m["documents"], m["pages"]
    extracted = m["extracted"]
    bad = m["not_succeeded"]
    what = f"docbatch run, {n:,} files"
    detail = [f"{folder.sizes()}; {docs:,} lines in the output"]
    if m["missing"] or m["unexpected"]:
        detail.append(f"missing {m['missing']}, unexpected {m['unexpected']}")
    detail += [f"{count} x {reason}" for reason, count in m["reasons"]]
    row(f"{what}: documents not succeeded", bad, "0", bad == 0, "; ".join(detail))
    row(
        f"{what}: extraction (files/s, start -> last extract unit done)",
        extracted / ex["from_start_s"],
        "report",
        None,
        f"{extracted:,} documents extracted ({pages:,} pages: PDF pages, one per other "
        f"document; the .txt notes are inline) in {ex['from_start_s']:.2f}s from the "
        f"command's start, {pages / ex['from_start_s']:.1f} pages/s; the stage alone (first "
        f"extract claim -> last done, {ex['units']} units) {ex['span_s']:.2f}s, "
        f"{extracted / ex['span_s']:.1f} files/s, {pages / ex['span_s']:.1f} pages/s (units "
        f"held {ex['held_s']:.2f}s of it; the summarize worker, starting on the same "
        f"{os.cpu_count()} cores, first claimed at {summ['first_from_start_s']:.1f}s); the "
        f"libraries called directly on the same documents, one core, nothing else: "
        f"{m['direct_s']:.2f}s ({extracted / m['direct_s']:.1f} files/s, ratio to the stage "
        f"{m['direct_s'] / ex['span_s']:.2f})",
    )
    s = m["tasks"].get("summarize", {})
    row(
        f"{what} --task summarize (docs/s, wall clock)",
        docs / m["wall_s"],
        "report",
        None,
        f"whole command {m['wall_s']:.2f}s for {docs:,} documents (start-up, migrations, "
        f"ingest, model load, extraction, extractive summarize over the bundled MiniLM, "
        f"results written; exit {m['code']}); summarize units first claim -> last done "
        f"{summ['span_s']:.2f}s, {s.get('chunks', 0):,} sentence chunks, "
        f"{s.get('tokens', 0):,} tokens ({s.get('tokens', 0) / summ['span_s']:,.0f} tokens/s)",
    )


def run(bench: Any, row: Callable[..., None], files: int = 1000) -> None:
    """bench/run.py's ``extract_folder`` figure."""
    tmp = bench.tmp / "extract-folder"
    tmp.mkdir()
    rows(measure(tmp, files, bench.env.procs), row)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--files", type=int, default=1000)
    args = p.parse_args()

    def show(figure: str, value: float, target: str, met: bool | None, detail: str) -> None:
        mark = "n/a" if met is None else ("MET" if met else "NOT MET")
        print(f"\n== {figure}: {value:,.3f}  (target {target}: {mark})\n   {detail}", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="docbatch-folder-"))
    print(f"working in {tmp}", flush=True)
    rows(measure(tmp, args.files), show)


if __name__ == "__main__":
    main()
