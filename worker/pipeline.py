"""Pipelined unit processing: the model does not wait for the database or the tokenizer.

A Celery task hands its unit to ``process_units``. While the model runs unit N:

- a **prefetch thread** claims the next queued unit of this worker's queue straight
  from Postgres and chunks its documents (claim + load + tokenize overlap the model);
- a **writer thread** commits unit N-1's results and terminal state (one transaction
  per unit, as always), so result writes never stall the model.

The task keeps going from unit to unit this way (a chain) until no queued unit is
left or ``DOCBATCH_WORKER_CHAIN_SECONDS`` pass, then waits for the writer and returns,
so its own message is acked only after every unit it ran is committed.

Why claim from Postgres instead of prefetching Celery messages: with ``acks_late``
and prefetch 1 a worker cannot see its next message before acking the current one,
and a larger prefetch would hold messages that a crash hides until the visibility
timeout. Claiming in Postgres is already the source of truth. Each unit this worker
runs is covered by a **lease** (schema/leases.py: a Postgres advisory lock on the
worker's own connection, gone the instant the process dies). When the message of a
unit claimed ahead reaches some worker, ``claim_unit`` sees the unit running under a
live lease and skips it. If the worker dies mid-chain, its leases vanish: the first
unit's message is redelivered (``reject_on_worker_lost``), units claimed ahead are
reclaimed when their messages arrive, or by the reconciler's running lease if their
messages were already consumed as skips. Results stay exactly-once either way
(unique (document, task), guarded state moves). SQLite (``docbatch run``) has no
leases, so it runs one unit per task without claim-ahead (``runner.process_unit``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from schema.db import get_engine, is_sqlite, transaction
from schema.leases import lease_key
from schema.settings import Settings
from schema.tables import Job, Unit, UnitState
from worker.handlers.base import Handler
from worker.runner import (
    BatchRunner,
    PreparedUnit,
    cancel_watcher,
    claim_in,
    prepare_unit,
    process_unit,
    run_prepared,
    write_outcome,
)

log = logging.getLogger("docbatch.worker")
CANDIDATES = 8


class Lease:
    """This process's unit leases: advisory locks held on one dedicated connection."""

    def __init__(self) -> None:
        self.conn: Connection = get_engine().connect()
        self.lock = threading.Lock()

    def _call(self, fn: str, unit_id: int) -> bool:
        ns, key = lease_key(unit_id)
        with self.lock:
            got = self.conn.execute(text(f"SELECT {fn}(:ns, :key)"), {"ns": ns, "key": key})
            value = bool(got.scalar())
            self.conn.commit()
        return value

    def acquire(self, unit_id: int) -> bool:
        """Take the unit's lease; False when another live worker holds it."""
        return self._call("pg_try_advisory_lock", unit_id)

    def release(self, unit_id: int) -> None:
        self._call("pg_advisory_unlock", unit_id)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A transaction on the lease connection (lease checks there are re-entrant)."""
        with self.lock, Session(bind=self.conn) as session, session.begin():
            yield session

    def close(self) -> None:
        """Drop the connection itself (not back to the pool): every lease goes with it."""
        with contextlib.suppress(Exception):
            self.conn.invalidate()
            self.conn.close()


_lease: Lease | None = None


def _get_lease() -> Lease:
    global _lease
    if _lease is None or _lease.conn.closed or _lease.conn.invalidated:
        _lease = Lease()
    return _lease


def _drop_lease() -> None:
    global _lease
    if _lease is not None:
        _lease.close()
        _lease = None


def warm_up() -> None:
    """Open the database pool and the lease connection before the first task arrives."""
    if is_sqlite():
        return
    try:
        with transaction() as s:
            s.execute(text("SELECT 1"))
        _get_lease()
    except Exception:  # noqa: BLE001 - the first task retries; never block start-up
        log.warning("database not reachable at worker start; will retry on the first task")
        _drop_lease()


def _claim(lease: Lease, unit_id: int, handler: Handler, settings: Settings) -> PreparedUnit | str:
    if not lease.acquire(unit_id):
        return "skipped"  # running on another live worker
    try:
        with lease.transaction() as s:
            claimed = claim_in(s, unit_id, handler, settings)
    except BaseException:
        with contextlib.suppress(Exception):
            lease.release(unit_id)
        raise
    if isinstance(claimed, str):
        lease.release(unit_id)
    return claimed


def _claim_next(lease: Lease, handler: Handler, settings: Settings) -> PreparedUnit | None:
    """Claim and chunk the next queued unit of this worker's queue, or None."""
    queue_name = settings.queue_for(handler.task)
    with transaction() as s:
        ids = s.scalars(
            select(Unit.id)
            .join(Job, Job.id == Unit.job_id)
            .where(Unit.queue == queue_name, Unit.state == UnitState.queued.value)
            .order_by(Job.priority.desc(), Unit.id)
            .limit(CANDIDATES)
        ).all()
    for unit_id in ids:
        claimed = _claim(lease, unit_id, handler, settings)
        if isinstance(claimed, PreparedUnit):
            return prepare_unit(
                handler,
                claimed.documents,
                claimed.params,
                job_id=claimed.job_id,
                unit_id=claimed.unit_id,
            )
    return None


class _Writer:
    """Commits units' outcomes in order on a thread, then releases their leases."""

    def __init__(self, lease: Lease, handler: Handler) -> None:
        self.lease = lease
        self.handler = handler
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.statuses: dict[int, str] = {}
        self.thread = threading.Thread(target=self._run, name="docbatch-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            job_id, unit_id, outcome = item
            try:
                if self.error is None:
                    self.statuses[unit_id] = write_outcome(self.handler, job_id, unit_id, outcome)
            except BaseException as exc:  # noqa: BLE001 - surfaced by close()
                log.exception("writing unit %s failed", unit_id)
                self.error = exc
            finally:
                with contextlib.suppress(Exception):
                    self.lease.release(unit_id)

    def put(self, job_id: str, unit_id: int, outcome: Any) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((job_id, unit_id, outcome))

    def close(self) -> None:
        """Wait for every queued write; raise the first write error."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def _requeue(lease: Lease, prep: PreparedUnit) -> None:
    """Give back a unit claimed ahead but not run (the chain stopped on an error)."""
    from worker.publish import publish_units

    with contextlib.suppress(Exception):
        with transaction() as s:
            unit = s.get(Unit, prep.unit_id, with_for_update=True)
            if unit is not None and unit.state == UnitState.running.value:
                unit.state = UnitState.queued.value
                unit.attempts = max(0, unit.attempts - 1)
                queue_name = unit.queue
            else:
                queue_name = ""
        lease.release(prep.unit_id)
        if queue_name:
            publish_units([(prep.unit_id, queue_name)])


def process_units(
    unit_id: int, handler: Handler, settings: Settings, batch_runner: BatchRunner | None = None
) -> str:
    """Process ``unit_id``, then keep claiming and running this queue's next units with
    claim/chunk and result writes overlapped with the model. Returns what happened to
    ``unit_id`` (as ``runner.process_unit`` does)."""
    if is_sqlite() or not settings.worker_claim_ahead:
        return process_unit(unit_id, handler, settings, batch_runner)
    try:
        lease = _get_lease()
        first = _claim(lease, unit_id, handler, settings)
    except Exception:
        _drop_lease()
        raise
    if isinstance(first, str):
        return first
    current = prepare_unit(
        handler, first.documents, first.params, job_id=first.job_id, unit_id=unit_id
    )
    deadline = time.monotonic() + settings.worker_chain_seconds
    runner = batch_runner or BatchRunner(handler)
    writer = _Writer(lease, handler)
    prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="docbatch-prefetch")
    ahead: Future[PreparedUnit | None] | None = prefetch.submit(
        _claim_next, lease, handler, settings
    )
    chained = 0
    handed = False  # whether ``current`` is with the writer (which then owns its lease)
    try:
        while True:
            outcome = run_prepared(handler, current, cancel_watcher(current.job_id), runner)
            writer.put(current.job_id, current.unit_id, outcome)
            handed = True
            if ahead is None:
                break
            nxt, ahead = ahead.result(), None
            if nxt is None:
                break
            current, handed = nxt, False
            chained += 1
            if time.monotonic() < deadline:
                ahead = prefetch.submit(_claim_next, lease, handler, settings)
    except BaseException:
        if not handed:
            if current.unit_id == unit_id:  # the message's unit: Celery retries it
                with contextlib.suppress(Exception):
                    lease.release(unit_id)
            else:
                _requeue(lease, current)
        if ahead is not None:
            with contextlib.suppress(BaseException):
                claimed = ahead.result()
                if claimed is not None:
                    _requeue(lease, claimed)
        raise
    finally:
        prefetch.shutdown(wait=True)
        writer.close()
    if chained:
        log.info("unit %s: ran %d more units claimed ahead", unit_id, chained)
    return writer.statuses.get(unit_id, "done")
