"""The extract stage: a unit's files become text, in a sandbox child. No model.

A stage of the one unit runner (docbatch.worker.runner, which claims, heartbeats, times,
writes and closes): ``load`` reads the unit's stored files and finds earlier extractions
of the same bytes by the same extractor versions (copied instead of run again);
``compute`` reads each file's original bytes from its blob and extracts it in the
process's ``Sandbox`` (a child process with a time limit per file: a parser that hangs
or crashes costs that file, never the worker), following attachments and archive members
(docbatch.worker.extract.expand), and stops between files and between an archive's
members once the job is cancelled; ``write`` hands the outcomes to
``docbatch.domain.extraction.record``. The model units that waited on these files are
settled when the runner closes the unit, and published after it commits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from docbatch.domain import blobs
from docbatch.domain.extraction import Extraction, earlier, files_of, record
from docbatch.domain.ledger import Claim, ClaimedDocument
from docbatch.domain.retry import RetryPolicy, describe, extract_time_limit, is_transient
from docbatch.domain.reuse import ResultIdentity
from docbatch.schema.settings import Settings
from docbatch.schema.tables import EXTRACT, DocumentFile, Job, ResultStatus, Unit
from docbatch.worker.extract.expand import Expander, extractor_for, sandbox_for, too_big
from docbatch.worker.stage import Computed, ShouldStop, Verdict

log = logging.getLogger("docbatch.worker")


@dataclass
class ExtractWork:
    """A claimed extract unit: its documents' stored files and earlier extractions."""

    documents: list[ClaimedDocument]  # custom_id: the file's name
    files: dict[int, DocumentFile]
    reused: dict[int, tuple[str, dict[str, Any]]]  # document id -> (text, output)


@dataclass
class Extractions(Computed):
    """One outcome per document extracted (none once the job is being cancelled)."""

    outcomes: dict[int, Extraction] = field(default_factory=dict)


class ExtractStage:
    """Files to text, as a stage of the runner (docbatch.worker.stage)."""

    task: str = EXTRACT
    reuse: ResultIdentity | None = None  # extractions are reused by the bytes' hash, in load
    # Claiming ahead would hold a unit an idle extract process could run: extracting is
    # all compute, nothing to overlap.
    claim_ahead: bool = False
    threaded: bool = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.extractor = extractor_for(settings)
        self.policy = RetryPolicy.of(settings)

    def load(self, session: Session, claim: Claim) -> ExtractWork:
        files = files_of(session, [d.id for d in claim.documents])
        job_id, tenant = claim.job.id, claim.job.tenant
        reused = {
            doc_id: found
            for doc_id, f in files.items()
            if f.sha256 and (found := earlier(session, tenant, job_id, f.sha256, self.extractor))
        }
        return ExtractWork(claim.documents, files, reused)

    def prepare(self, work: ExtractWork) -> None:
        pass

    def time_limit(self, work: ExtractWork) -> tuple[float, str] | None:
        files = len(work.documents) - len(work.reused)
        return extract_time_limit(self.policy, files, self.settings.extract_time_limit_seconds)

    def compute(self, work: ExtractWork, should_stop: ShouldStop) -> Extractions:
        settings = self.settings
        out = Extractions()
        expander = Expander(sandbox_for(settings), settings, should_stop)
        for doc_id, name, _text in work.documents:
            if should_stop():
                out.cancelled = True
                break
            f = work.files.get(doc_id)
            if doc_id in work.reused:
                text, output = work.reused[doc_id]
                out.outcomes[doc_id] = Extraction(
                    name,
                    ResultStatus.succeeded,
                    text,
                    output,
                    library=output.get("library"),
                    reused=True,
                )
            elif f is None:  # a text document in an extract range cannot happen; say so
                out.outcomes[doc_id] = Extraction(
                    name, ResultStatus.failed, error="no file stored for this document"
                )
            elif f.blob_oid is None:
                out.outcomes[doc_id] = Extraction(
                    name, ResultStatus.failed, error=too_big(f, settings)
                )
            else:
                data = b"".join(blobs.read(f.blob_oid, settings=settings))
                out.outcomes[doc_id] = expander.top(name, data)
                if expander.stopped:  # cancelled in the middle of an archive
                    out.cancelled = True
                    break
        return out

    def write(
        self, session: Session, unit: Unit, job: Job, computed: Extractions, *, isolate: bool
    ) -> None:
        if computed.cancelled:  # the unit closes cancelled; nothing half-extracted is kept
            return
        if not isolate:
            record(session, self.settings, unit, job, computed.outcomes, self.extractor)
            return
        for doc_id, ex in computed.outcomes.items():
            try:
                with session.begin_nested():
                    record(session, self.settings, unit, job, {doc_id: ex}, self.extractor)
            except Exception as exc:
                if is_transient(exc):
                    raise
                reason = f"the extraction could not be stored: {describe(exc)}"
                log.warning("unit %s: %s: %s", unit.id, ex.name, reason)
                failed = Extraction(ex.name, ResultStatus.failed, error=reason)
                with session.begin_nested():
                    record(session, self.settings, unit, job, {doc_id: failed}, self.extractor)

    def finished(self, computed: Extractions, verdict: Verdict | None) -> None:
        pass
