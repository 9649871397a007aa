"""A stage: what one kind of worker does with a unit it holds: compute, then write.

Every stage (the extract stage, every model task) moves its units through the same
runner (docbatch.worker.runner: claim on the lease connection, heartbeat, time limit,
write and close in one transaction, attempts, follow-ups). A stage supplies only:

- ``load``: read what computing needs, in the claim's transaction;
- ``prepare``: CPU work before computing that may run while another unit computes
  (the model stage chunks with its tokenizer);
- ``time_limit``: how long computing may take;
- ``compute``: the work itself, checking ``should_stop`` (the job was cancelled) as
  often as it can; no database writes;
- ``write``: its rows, in the transaction that then closes the unit; with ``isolate``,
  each document's rows in a savepoint of its own, a document the database refuses
  failing alone with the reason;
- ``finished``: after that transaction, whatever became of the unit (metrics, removing
  what ``compute`` left on disk).

Example (the shape of docbatch.worker.model_stage and docbatch.worker.extraction)::

    class UpperStage:
        task, reuse, claim_ahead, threaded = "upper", None, False, False
        def load(self, session, claim): return claim.documents
        def prepare(self, work): pass
        def time_limit(self, work): return None
        def compute(self, work, should_stop): return Rows(rows=[...])
        def write(self, session, unit, job, computed, *, isolate): ledger.write_results(...)
        def finished(self, computed, verdict): pass
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from sqlalchemy.orm import Session

from docbatch.domain.accounting import Tally
from docbatch.domain.ledger import Claim
from docbatch.domain.reuse import ResultIdentity
from docbatch.schema.tables import Job, Unit

ShouldStop = Callable[[], bool]


class Verdict(StrEnum):
    """What became of a unit a worker was handed."""

    done = "done"  # computed, written, closed done
    cancelled = "cancelled"  # the job was cancelled: closed cancelled
    failed = "failed"  # its results could not be stored: closed failed with the reason
    skipped = "skipped"  # closed already, or running on another live worker
    misrouted = "misrouted"  # another task's unit: failed with the reason
    superseded = "superseded"  # another delivery closed it first: nothing written
    given_back = "given back"  # the worker is stopping: queued again for another, unwritten


@dataclass
class Computed:
    """What computing one unit produced, before it is written (stages extend it)."""

    cancelled: bool = False  # stopped early: the job is being cancelled
    chunks: int = 0
    tokens: int = 0
    # For usage accounting (docbatch.domain.accounting): the model that computed, tokens it
    # generated, seconds of compute (set by the runner), files and pages extracted.
    model: str = ""
    generated_tokens: int = 0
    model_seconds: float = 0.0
    files: int = 0
    pages: int = 0

    def tally(self) -> Tally:
        return Tally(
            model=self.model,
            input_tokens=self.tokens,
            generated_tokens=self.generated_tokens,
            chunks=self.chunks,
            model_seconds=self.model_seconds,
            extract_files=self.files,
            extract_pages=self.pages,
        )


W = TypeVar("W")
C = TypeVar("C", bound=Computed)


@dataclass
class Held(Generic[W]):
    """A unit this worker claimed and holds (under its lease on Postgres)."""

    unit_id: int
    job_id: str
    work: W
    tenant: str = ""
    priority: int = 0  # its job's
    # Picked from the backlog for a tenant behind the queue's clock: it may run before a
    # unit claimed ahead of it (docbatch.domain.fairshare, "overtaking").
    overtaking: bool = False


class Stage(Protocol[W, C]):
    """What the runner needs from a stage (see the module docstring)."""

    task: str  # the unit task this stage serves
    reuse: ResultIdentity | None  # copy earlier results at claim (docbatch.domain.reuse)
    claim_ahead: bool  # claim the queue's next unit while this one computes
    threaded: bool  # claim ahead and write on threads beside compute, else inline

    def load(self, session: Session, claim: Claim) -> W: ...

    def prepare(self, work: W) -> None: ...

    def time_limit(self, work: W) -> tuple[float, str] | None:
        """(seconds, the reason recorded if they run out), or None for no limit."""
        ...

    def compute(self, work: W, should_stop: ShouldStop) -> C: ...

    def write(self, session: Session, unit: Unit, job: Job, computed: C, *, isolate: bool) -> None:
        """Write the unit's rows (the runner closes it afterwards, in the same
        transaction)."""
        ...

    def finished(self, computed: C, verdict: Verdict | None) -> None:
        """After the unit's write, whatever its fate: ``verdict`` is None when the write
        raised, ``superseded`` when another delivery had closed the unit."""
        ...
