"""Pipelined unit processing: the model does not wait for the database or the tokenizer.

A Celery task hands its unit to ``run_leased_units``. While the model runs unit N:

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
leases, so it runs one unit per task without claim-ahead (``runner.run_unit``).
With ``DOCBATCH_WORKER_CLAIM_AHEAD=false`` the same code runs one unit per task, still
under its lease, so a duplicate message can never run a unit twice at once.
Which of the three a worker uses is chosen once, at start-up (``choose_processor``).

Every unit whose lease this process holds is heartbeated, and the unit the model runs
has a time limit (worker/heartbeat.py ``Holdings``). Only the ledger moves unit state:
a unit claimed ahead but not run is given back with ``ledger.release_unit``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, select, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from docbatch.domain import ledger
from docbatch.domain.leases import keepalive_connect_args, lease_key
from docbatch.schema.db import is_sqlite, transaction
from docbatch.schema.settings import Settings, get_settings
from docbatch.schema.tables import Job, Unit, UnitState
from docbatch.worker.handlers.base import Handler
from docbatch.worker.heartbeat import Holdings, time_limit
from docbatch.worker.runner import (
    BatchRunner,
    Outcome,
    PreparedUnit,
    UnitOutcome,
    cancel_watcher,
    claim_in,
    prepare,
    publish_split,
    run_prepared,
    run_unit,
    write_outcome,
)

log = logging.getLogger("docbatch.worker")
CANDIDATES = 8
UnitProcessor = Callable[[int, Handler, Settings], Outcome]
T = TypeVar("T")


@functools.lru_cache(maxsize=4)
def _lease_engine(url: str, lease_seconds: float) -> Engine:
    # Its own engine, unpooled: the lease connection is never shared, and it carries
    # keepalives so a host that vanishes frees its leases within about a lease period.
    return create_engine(
        url, poolclass=NullPool, connect_args=keepalive_connect_args(lease_seconds)
    )


class Lease:
    """This process's unit leases: advisory locks held on one dedicated connection. Every
    unit leased is heartbeated (and, while the model runs it, timed) by ``holdings``."""

    def __init__(self, settings: Settings | None = None) -> None:
        settings = settings or get_settings()
        engine = _lease_engine(settings.database_url, settings.running_lease_seconds)
        self.conn: Connection = engine.connect()
        self.lock = threading.Lock()
        self.holdings = Holdings(settings.unit_heartbeat_seconds)

    def _call(self, fn: str, unit_id: int) -> bool:
        ns, key = lease_key(unit_id)
        with self.lock:
            got = self.conn.execute(text(f"SELECT {fn}(:ns, :key)"), {"ns": ns, "key": key})
            value = bool(got.scalar())
            self.conn.commit()
        return value

    def acquire(self, unit_id: int) -> bool:
        """Take the unit's lease; False when another live worker holds it."""
        got = self._call("pg_try_advisory_lock", unit_id)
        if got:
            self.holdings.hold(unit_id)
        return got

    def release(self, unit_id: int) -> None:
        self.holdings.release(unit_id)
        self._call("pg_advisory_unlock", unit_id)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A transaction on the lease connection (lease checks there are re-entrant)."""
        with self.lock, Session(bind=self.conn) as session, session.begin():
            yield session

    def close(self) -> None:
        """Drop the connection itself: every lease goes with it."""
        self.holdings.close()
        with contextlib.suppress(Exception):
            self.conn.invalidate()
            self.conn.close()


_lease: Lease | None = None


def get_lease(settings: Settings | None = None) -> Lease:
    """This process's lease connection (opened on first use, again after it broke)."""
    global _lease
    if _lease is None or _lease.conn.closed or _lease.conn.invalidated:
        _lease = Lease(settings)
    return _lease


def drop_lease() -> None:
    """Close the lease connection (after an error on it): every lease it held goes."""
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
        get_lease()
    except Exception:  # the first task retries; never block start-up
        log.warning("database not reachable at worker start; will retry on the first task")
        drop_lease()


def _limit_reason(settings: Settings, tokens: int, seconds: float) -> str:
    return (
        f"the attempt ran past its time limit of {seconds:.0f} s "
        f"(DOCBATCH_UNIT_TIME_LIMIT_BASE_SECONDS={settings.unit_time_limit_base_seconds:g} + "
        f"DOCBATCH_UNIT_TIME_LIMIT_SECONDS_PER_1K_TOKENS="
        f"{settings.unit_time_limit_seconds_per_1k_tokens:g} per 1,000 of its {tokens} "
        "tokens) and its worker process was replaced"
    )


def _start_clock(lease: Lease, prep: PreparedUnit, settings: Settings) -> None:
    tokens = sum(prep.lengths)
    seconds = time_limit(settings, tokens)
    if seconds is not None:
        lease.holdings.limit(prep.unit_id, seconds, _limit_reason(settings, tokens, seconds))


def _claim(
    lease: Lease, unit_id: int, handler: Handler, settings: Settings
) -> PreparedUnit | Outcome:
    """Take the lease, claim and chunk the unit; the lease stays held while it is ours."""
    if not lease.acquire(unit_id):
        return Outcome.skipped  # running on another live worker
    try:
        with lease.transaction() as s:
            claimed = claim_in(s, unit_id, handler, settings)
        publish_split(claimed)
        if isinstance(claimed, Outcome):
            lease.release(unit_id)
            return claimed
        _start_clock(lease, claimed, settings)  # the tokenizer may hang too
        prepare(handler, claimed)
        lease.holdings.limit(unit_id, None)  # its clock restarts when the model takes it
    except BaseException:
        with contextlib.suppress(Exception):
            lease.release(unit_id)
        raise
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
            return claimed
    return None


def _give_back(lease: Lease, unit_id: int, *, publish: bool = True) -> None:
    """Through the ledger: a unit we hold goes back to queued (no attempt counted) and,
    with ``publish``, gets a new message; then its lease is released. If the database is
    unreachable the lease still goes and the reconciler takes the unit back later."""
    try:
        with transaction() as s:
            queue_name = ledger.release_unit(s, unit_id)
        if queue_name and publish:
            from docbatch.domain.publish import republish

            republish([unit_id])
    except Exception:  # the lease period recovers it
        log.exception("could not give back unit %s", unit_id)
    with contextlib.suppress(Exception):
        lease.release(unit_id)


class _Writer:
    """Commits units' outcomes in order (on a thread, or inline in ``put``), then releases
    their leases.

    One unit's write failing never stops the others: each queued outcome is written, and
    a unit whose write fails is given back through the ledger (queued again, no attempt
    counted). The first error is returned by ``close`` (so the task retries)."""

    def __init__(self, lease: Lease, handler: Handler, *, threaded: bool = True) -> None:
        self.lease = lease
        self.handler = handler
        self.queue: queue.Queue[tuple[str, int, UnitOutcome] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.statuses: dict[int, Outcome] = {}
        self.thread: threading.Thread | None = None
        if threaded:
            self.thread = threading.Thread(target=self._run, name="docbatch-writer", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            self._write(*item)

    def _write(self, job_id: str, unit_id: int, outcome: UnitOutcome) -> None:
        try:
            self.statuses[unit_id] = write_outcome(self.handler, job_id, unit_id, outcome)
        except BaseException as exc:  # surfaced by close()
            log.exception("writing unit %s failed; giving it back", unit_id)
            if self.error is None:
                self.error = exc
            _give_back(self.lease, unit_id)
        else:
            with contextlib.suppress(Exception):
                self.lease.release(unit_id)

    def put(self, job_id: str, unit_id: int, outcome: UnitOutcome) -> None:
        if self.thread is None:
            self._write(job_id, unit_id, outcome)
        else:
            self.queue.put((job_id, unit_id, outcome))

    def close(self) -> BaseException | None:
        """Wait for every queued write; the first write error, if any (never raises, so
        an exception already on its way is not replaced)."""
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
        return self.error


class _Inline(Executor):
    """An executor that runs what it is given at once, in the caller's thread."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        done: Future[T] = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            done.set_exception(exc)
        return done


def overlaps(handler: Handler, settings: Settings) -> bool:
    """Claim/chunk ahead and write results on threads beside the model? On a GPU the model
    waits on the device and the threads fill that time. On the CPU the model's threads
    already hold every core and the threads only take cores and the GIL from it: a
    Python-bound ``generate`` (small models) waits up to the GIL's switch interval each
    time it takes the GIL back (1.5 s of tiny-Marian generation took 17 s beside a thread
    tokenizing non-stop). Measured through the whole path on 2 cores, inline gives the
    same wall clock and 2-17 % less model time (``bench.run --only task_paths``)."""
    if settings.worker_overlap != "auto":
        return settings.worker_overlap == "threads"
    return not handler.device.startswith("cpu")


def choose_processor(settings: Settings) -> UnitProcessor:
    """How this worker runs the units it is handed, decided once at start-up: SQLite runs
    one unit per task without leases; Postgres runs under leases, pipelined unless
    DOCBATCH_WORKER_CLAIM_AHEAD=false."""
    if is_sqlite(settings):
        return run_unit
    return functools.partial(run_leased_units, claim_ahead=settings.worker_claim_ahead)


def run_leased_units(
    unit_id: int,
    handler: Handler,
    settings: Settings,
    batch_runner: BatchRunner | None = None,
    *,
    claim_ahead: bool = True,
) -> Outcome:
    """Process ``unit_id`` under its lease; with ``claim_ahead``, keep claiming and running
    this queue's next units with claim/chunk and result writes overlapped with the model.
    Returns what happened to ``unit_id``."""
    try:
        lease = get_lease(settings)
        first = _claim(lease, unit_id, handler, settings)
    except Exception:
        drop_lease()
        raise
    if isinstance(first, Outcome):
        return first
    current = first
    deadline = time.monotonic() + settings.worker_chain_seconds
    runner = batch_runner or BatchRunner(handler)
    threaded = overlaps(handler, settings)
    writer = _Writer(lease, handler, threaded=threaded)
    prefetch: Executor = (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="docbatch-prefetch")
        if threaded
        else _Inline()
    )
    ahead: Future[PreparedUnit | None] | None = None
    if claim_ahead:
        ahead = prefetch.submit(_claim_next, lease, handler, settings)
    chained = 0
    # Lease ownership: ``owned`` is the unit we hold and have not handed to the writer
    # (the writer then releases it); ``ahead``'s result is ours until it is run.
    owned: PreparedUnit | None = current
    try:
        while True:
            _start_clock(lease, current, settings)
            outcome = run_prepared(handler, current, cancel_watcher(current.job_id), runner)
            lease.holdings.limit(current.unit_id, None)
            writer.put(current.job_id, current.unit_id, outcome)
            owned = None
            if ahead is None:
                break
            nxt, ahead = ahead.result(), None
            if nxt is None:
                break
            current = owned = nxt
            chained += 1
            if time.monotonic() < deadline and writer.error is None:
                ahead = prefetch.submit(_claim_next, lease, handler, settings)
    except BaseException:
        if owned is not None:
            if owned.unit_id == unit_id:  # the message's unit: Celery retries it
                with contextlib.suppress(Exception):
                    lease.release(unit_id)
            else:
                _give_back(lease, owned.unit_id)
        if ahead is not None:
            with contextlib.suppress(BaseException):
                claimed = ahead.result()
                if claimed is not None:
                    _give_back(lease, claimed.unit_id)
        raise
    finally:
        prefetch.shutdown(wait=True)
        write_error = writer.close()
    if write_error is not None:
        raise write_error
    if chained:
        log.info("unit %s: ran %d more units claimed ahead", unit_id, chained)
    return writer.statuses.get(unit_id, Outcome.done)
