"""The outbox: what a transaction must publish once it commits.

Postgres is the record and Redis carries only ids, so a message is sent only after the
rows it names are committed. Domain code never sends anything itself: it appends to the
outbox of the transaction it runs in, and the transaction publishes once, after commit::

    with unit_of_work(settings) as session:
        jobs.create_job(session, settings, ...)   # appends its queues to top up
    # committed: the queues are topped up now; on a rollback nothing is

Five kinds of follow-up travel this way: queues to top up from their backlog
(docbatch.domain.dispatch picks their next units in fair order and sends them), unit ids
for their queues (what the dispatcher picked, or a lost message sent again), cancel
sweeps and job deletes for the maintenance queue (docbatch.worker.cancel,
docbatch.worker.deletion), and webhook deliveries for ``docbatch webhooks``. Publishing
is best effort with one policy: a send that fails is logged and left to the reconciler
(docbatch.domain.reconcile), which finds
every queued unit, cancelling job and undelivered webhook in Postgres; it is the
backstop, never the plan.

What a savepoint appended goes with it if the savepoint rolls back (``begin_nested``).
Appending outside a unit of work is a programming error and raises ``NoOutbox``: a
follow-up that nothing would publish is a unit that waits for the reconciler.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Connection, event
from sqlalchemy.orm import Session, SessionTransaction

from docbatch.domain import publish
from docbatch.domain.dispatch import needing_top_up, top_up
from docbatch.schema.db import new_session
from docbatch.schema.settings import Settings

log = logging.getLogger("docbatch.outbox")
_KEY = "docbatch.outbox"


class NoOutbox(RuntimeError):
    """A follow-up was appended in a transaction that is not a unit of work."""


class QueuedUnit(NamedTuple):
    """A unit to publish on its queue, at its job's priority (0-9, 9 = most urgent)."""

    unit_id: int
    queue: str
    priority: int


@dataclass
class Outbox:
    """Follow-ups collected by one transaction, published after it commits."""

    dispatches: list[str] = field(default_factory=list)  # queues to top up
    units: list[QueuedUnit] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)  # job ids to sweep
    webhooks: list[int] = field(default_factory=list)  # delivery ids
    deletes: list[str] = field(default_factory=list)  # job ids whose rows to delete

    def add_delete(self, job_id: str) -> None:
        if job_id not in self.deletes:
            self.deletes.append(job_id)

    def add_dispatch(self, queue: str) -> None:
        """``queue`` may have new backlog, or room for more of it: top it up after commit."""
        if queue not in self.dispatches:
            self.dispatches.append(queue)

    def add_unit(self, unit_id: int, queue: str, priority: int) -> None:
        self.units.append(QueuedUnit(int(unit_id), queue, int(priority)))

    def add_cancel(self, job_id: str) -> None:
        if job_id not in self.cancels:
            self.cancels.append(job_id)

    def add_webhooks(self, delivery_ids: list[int]) -> None:
        self.webhooks.extend(int(d) for d in delivery_ids)

    def __bool__(self) -> bool:
        return bool(self.dispatches or self.units or self.cancels or self.webhooks or self.deletes)

    def unit_ids(self) -> list[int]:
        return [u.unit_id for u in self.units]

    def publish(self, settings: Settings) -> None:
        """Send everything, each kind on one broker connection; a failure is logged (the
        reconciler sends what did not go out) and never raised."""
        sends: list[tuple[str, list[Any], Any]] = [
            ("units", self.units, publish.publish_prioritized),
            ("top-ups of queues", self.dispatches, top_up_queues),
            ("cancel sweeps of jobs", self.cancels, publish.publish_cancels),
            ("webhook deliveries", self.webhooks, publish.publish_webhooks),
            ("deletes of jobs", self.deletes, publish.publish_deletes),
        ]
        for what, items, send in sends:
            if not items:
                continue
            try:
                send(items, settings)
            except Exception:  # the reconciler is the backstop
                log.exception(
                    "could not publish %d %s after commit; the reconciler will", len(items), what
                )

    def _mark(self) -> tuple[int, int, int, int, int]:
        return (
            len(self.units),
            len(self.cancels),
            len(self.webhooks),
            len(self.deletes),
            len(self.dispatches),
        )

    def _truncate(self, mark: tuple[int, int, int, int, int]) -> None:
        del self.units[mark[0] :], self.cancels[mark[1] :], self.webhooks[mark[2] :]
        del self.deletes[mark[3] :], self.dispatches[mark[4] :]


def outbox(session: Session) -> Outbox:
    """The outbox of ``session``'s transaction (raises ``NoOutbox`` outside a unit of work)."""
    box = session.info.get(_KEY)
    if box is None:
        raise NoOutbox(
            "this transaction publishes follow-ups: open it with "
            "docbatch.domain.outbox.unit_of_work(settings)"
        )
    assert isinstance(box, Outbox)
    return box


@contextlib.contextmanager
def unit_of_work(
    settings: Settings, *, bind: Connection | None = None, publish: bool = True
) -> Iterator[Session]:
    """A transaction (on ``bind``, else a pooled connection of ``settings``' database) whose
    outbox is published once it has committed, and dropped if it rolls back. With
    ``publish=False`` nothing is sent: the caller runs the units itself in this process
    (tests, benchmarks) and may read them with ``outbox(session).unit_ids()``."""
    session = (
        Session(bind=bind, expire_on_commit=False) if bind is not None else new_session(settings)
    )
    box = Outbox()
    with session:
        session.info[_KEY] = box
        try:
            with session.begin():
                yield session
                if publish and box.dispatches:  # a full queue needs no top-up transaction
                    box.dispatches = needing_top_up(session, settings, box.dispatches)
        finally:
            session.info.pop(_KEY, None)
    # Reached only after the commit: an exception (in the block or at commit) skips it.
    if publish:
        box.publish(settings)


_MARK = "_docbatch_outbox_mark"


@event.listens_for(Session, "after_transaction_create")
def _savepoint_began(session: Session, transaction: SessionTransaction) -> None:
    box = session.info.get(_KEY)
    if box is not None and transaction.nested:
        setattr(transaction, _MARK, box._mark())


@event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    box = session.info.get(_KEY)
    mark = getattr(previous_transaction, _MARK, None)
    if box is not None and mark is not None:
        box._truncate(mark)


def top_up_queues(queues: list[str], settings: Settings) -> int:
    """Top up each queue (docbatch.domain.dispatch), a unit of work each, whose units are
    sent after its commit; returns how many."""
    sent = 0
    for queue in queues:
        with unit_of_work(settings) as s:
            ids = top_up(s, settings, queue)
            box = outbox(s)
            for unit_id in ids:
                # One priority for all: the dispatcher's order is the order.
                box.add_unit(unit_id, queue, 0)
            sent += len(ids)
    return sent
