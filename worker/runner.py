"""The one unit runner: how every stage's units are claimed, run, written and closed.

``UnitRunner(stage, settings).run(unit_id)`` is what a Celery task calls with the unit id
of its message, for the extract stage and every model task alike (docs/unit-lifecycle.md
draws the whole path). Per unit:

1. **claim**, on the lease connection (docbatch.worker.lease): take the unit's lease
   (another live worker holds it: skipped), then ``ledger.claim_unit`` in a unit of work
   on that same connection (closed already, cancelled, bisected, given up: decided
   there); a unit of another task is failed as misrouted; the stage loads its inputs;
2. **prepare** (the stage's CPU work, under the time limit) and **compute** (checking
   the job's cancel every ``CANCEL_CHECK_SECONDS``), heartbeated all along and under the
   stage's time limit (docbatch.worker.heartbeat);
3. **write and close** in one transaction: the stage's rows, then ``ledger.close_unit``
   (done, or cancelled if it stopped early) and the job's end if it was the last; a unit
   another delivery closed first is **superseded** and nothing is written. A write the
   database refuses is written again document by document, each refused document
   failing alone with the reason; if even that fails, the unit is closed failed with it
   (docbatch.domain.retry: such an error is never retried, so it cannot loop). A
   transient error gives the unit back, its attempt refunded, and the task retries;
4. **follow-ups**: whatever the transactions put in their outbox (units split off or
   released, a cancel sweep, the job's webhook) is published after each commit.

With ``stage.claim_ahead`` (Postgres only) the runner keeps going: while a unit computes
it claims and prepares the queue's next one, and writes the previous one, on threads
(``stage.threaded``) or inline (docbatch.worker.pipeline), until no queued unit is left
or DOCBATCH_WORKER_CHAIN_SECONDS pass. A unit claimed after a claimed-ahead one that
overtakes it in the fair order (``overtakes``: a tenant that arrived meanwhile, a more
urgent job) runs first (``_order``). SQLite (``docbatch run``) has no leases: one unit
per task, heartbeated, no time limit (its watchdog would take the only worker down).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic

from docbatch.domain import accounting, dispatch, fairshare, ledger, tracing
from docbatch.domain.outbox import unit_of_work
from docbatch.domain.retry import RetryPolicy, describe, is_transient
from docbatch.domain.waiting import UnitLimits
from docbatch.schema.db import transaction
from docbatch.schema.logs import log_context
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Unit, UnitState
from docbatch.worker import metrics as worker_metrics
from docbatch.worker import shutdown
from docbatch.worker.chain_clock import ChainClock
from docbatch.worker.lease import Lease, Unleased, drop_lease, holder_for
from docbatch.worker.pipeline import Inline, Writer
from docbatch.worker.stage import C, Held, ShouldStop, Stage, Verdict, W

log = logging.getLogger("docbatch.worker")
CANCEL_CHECK_SECONDS = 0.5
CANDIDATES = 8  # queued units tried per claim-ahead

Holder = Lease | Unleased


@dataclass(frozen=True)
class Overtaken:
    """Starting a unit claimed ahead found units that would overtake it (``_begin``)."""

    jobs: frozenset[str]


def overtakes(new: Held[W], ahead: Held[W]) -> bool:
    """Does ``new``, claimed after ``ahead``, run before it? Another tenant's unit picked
    overtaking (its tenant was behind the queue's clock: had it been waiting when
    ``ahead`` was picked, it would have been picked first), or a more urgent job's unit
    of the same tenant."""
    if new.tenant != ahead.tenant:
        return new.overtaking
    return new.priority > ahead.priority


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def cancel_watcher(job_id: str, settings: Settings, known: bool | None = None) -> ShouldStop:
    """True once the job is being cancelled, asked of the database at most every
    ``CANCEL_CHECK_SECONDS``. The first call asks (a unit claimed ahead may have waited
    while the job was cancelled) unless ``known`` is the answer just read."""
    last = [0.0, False] if known is None else [time.monotonic(), known]

    def should_stop() -> bool:
        now = time.monotonic()
        if now - last[0] >= CANCEL_CHECK_SECONDS:
            last[0] = now
            with transaction(settings) as s:
                last[1] = ledger.is_cancelling(s, job_id)
        return bool(last[1])

    return should_stop


class UnitRunner(Generic[W, C]):
    """Runs the units of one stage in this process (see the module docstring)."""

    def __init__(
        self,
        stage: Stage[W, C],
        settings: Settings,
        policy: RetryPolicy | None = None,
        holder: Holder | None = None,
    ) -> None:
        """``holder``: the leases to run under (default: this process's, ``holder_for``)."""
        self.stage = stage
        self.settings = settings
        self.policy = policy or RetryPolicy.of(settings)
        self.holder = holder
        self.leased = not settings.database_url.startswith("sqlite")
        self.limits = UnitLimits.of(settings)
        self.interrupted: set[int] = set()  # units a stop of this worker cut short
        self.asked: frozenset[str] = frozenset()  # jobs a chain claimed for (_begin)

    # -- one unit --------------------------------------------------------------------------

    def claim(self, holder: Holder, unit_id: int, *, attempt: bool = True) -> Held[W] | Verdict:
        """Take the unit and prepare it; the lease stays held while it is ours. With
        ``attempt=False`` (claimed ahead) its attempt is counted only when ``compute``
        starts it: a worker killed by the unit computing beside it charges it nothing."""
        with log_context(unit_id=unit_id), tracing.span("unit.claim", unit_id=unit_id) as sp:
            claimed = self._claim(holder, unit_id, attempt)
            held = claimed if isinstance(claimed, Held) else None
            tracing.annotate(
                sp,
                task=self.stage.task,
                job_id=held.job_id if held else None,
                verdict=None if held else str(claimed),
            )
            return claimed

    def _claim(self, holder: Holder, unit_id: int, attempt: bool) -> Held[W] | Verdict:
        if not holder.acquire(unit_id):
            return Verdict.skipped  # running on another live worker
        try:
            verdict, held = Verdict.skipped, None
            with holder.transaction() as s:
                claim = ledger.claim_unit(
                    s,
                    unit_id,
                    worker_name(),
                    self.policy,
                    reuse=self.stage.reuse,
                    attempt=attempt,
                )
                if claim is not None and claim.unit.task != self.stage.task:
                    reason = (
                        f"unit for task {claim.unit.task!r} reached a {self.stage.task!r} worker"
                    )
                    ledger.close_unit(s, claim.unit, UnitState.failed, reason=reason)
                    ledger.finalize_job_if_done(s, claim.job)
                    verdict = Verdict.misrouted
                elif claim is not None:
                    held = Held(
                        unit_id,
                        claim.job.id,
                        self.stage.load(s, claim),
                        claim.job.tenant,
                        int(claim.job.priority or 0),
                    )
                    worker_metrics.claimed(self.stage.task, claim.unit.published_at)
            if held is None:
                holder.release(unit_id)
                return verdict
            if attempt:
                holder.holdings.count(unit_id)
            self._clock(holder, held)  # the tokenizer may hang too
            self.stage.prepare(held.work)
            holder.holdings.limit(unit_id, None)  # its clock restarts when it computes
        except BaseException:
            with contextlib.suppress(Exception):
                holder.release(unit_id)
            raise
        return held

    def logged(self, held: Held[W]) -> contextlib.AbstractContextManager[dict[str, object]]:
        """The unit's ids on every log line inside (DOCBATCH_LOG_FORMAT=json)."""
        return log_context(job_id=held.job_id, unit_id=held.unit_id, tenant=held.tenant or None)

    def compute(self, holder: Holder, held: Held[W], begun: bool | None = None) -> C:
        """The unit's computed rows. A stop of this worker (SIGTERM, past
        DOCBATCH_WORKER_SHUTDOWN_GRACE_SECONDS) stops the stage early and puts the unit in
        ``self.interrupted``: nothing of it is written, it is given back. ``begun``: what
        ``_start`` returned if the chain started the unit already."""
        known = self._start(holder, held) if begun is None else begun
        cancelled = cancel_watcher(held.job_id, self.settings, known)
        self._clock(holder, held)
        grace = self.settings.worker_shutdown_grace_seconds
        interrupted = False

        def should_stop() -> bool:
            nonlocal interrupted
            if shutdown.past_grace(grace):
                interrupted = True
                return True
            if holder.holdings.is_lost(held.unit_id):
                return True  # another worker runs it now: nothing of it is written
            return cancelled()

        started = time.perf_counter()
        with (
            self.logged(held),
            tracing.span("unit.compute", job_id=held.job_id, unit_id=held.unit_id),
        ):
            computed = self.stage.compute(held.work, should_stop)
        computed.model_seconds = time.perf_counter() - started  # usage: the worker's own time
        holder.holdings.limit(held.unit_id, None)
        if interrupted and computed.cancelled:
            self.interrupted.add(held.unit_id)
        return computed

    def _start(self, holder: Holder, held: Held[W]) -> bool | None:
        """Count the attempt of a unit claimed ahead as it starts computing (one
        transaction that also reads whether its job is being cancelled, the cancel
        watcher's first question); None for a unit whose attempt the claim counted."""
        started = self._begin(holder, held, check=False)
        assert not isinstance(started, Overtaken)
        return started

    def _begin(self, holder: Holder, held: Held[W], *, check: bool) -> bool | None | Overtaken:
        """``_start``; with ``check``, the same transaction first asks whether a unit that
        would overtake ``held`` waits in the backlog (fairshare.overtaking, jobs already
        asked about in this chain left out): then nothing is counted and those jobs are
        returned."""
        if holder.holdings.counted(held.unit_id):
            return None
        with transaction(self.settings) as s:
            if check:
                waiting = fairshare.overtaking(s, self.queue, held.tenant, held.priority)
                if waiting - self.asked:
                    return Overtaken(frozenset(waiting))
            ledger.start_attempt(s, held.unit_id)
            cancelling = ledger.is_cancelling(s, held.job_id)
        holder.holdings.count(held.unit_id)
        return cancelling

    def _clock(self, holder: Holder, held: Held[W]) -> None:
        if self.leased and (limit := self.stage.time_limit(held.work)) is not None:
            holder.holdings.limit(held.unit_id, *limit)

    def finish(self, holder: Holder, held: Held[W], computed: C) -> Verdict:
        """Write the unit's rows and close it in one transaction, then let it go (a unit
        lost to another worker while this one's lease connection was cut: nothing)."""
        verdict: Verdict | None = None
        if holder.holdings.is_lost(held.unit_id):
            log.warning("unit %s: another worker runs it now; nothing written", held.unit_id)
            verdict = Verdict.superseded
            with contextlib.suppress(Exception):
                self.stage.finished(computed, verdict)
            holder.release(held.unit_id)
            return verdict
        try:
            with (
                self.logged(held),
                tracing.span("unit.write", job_id=held.job_id, unit_id=held.unit_id) as sp,
            ):
                verdict = self._write_and_close(held, computed)
                tracing.annotate(sp, verdict=verdict.value)
                log.info("unit %s of job %s: %s", held.unit_id, held.job_id, verdict.value)
        except Exception as exc:
            if is_transient(exc):  # queued again, attempt refunded: the task retries
                self.give_back(holder, held.unit_id)
            else:
                with contextlib.suppress(Exception):
                    holder.release(held.unit_id)
            raise
        finally:
            try:
                self.stage.finished(computed, verdict)
            except Exception:  # metrics or a temporary file: never the unit's fate
                log.exception("unit %s: the stage's clean-up failed", held.unit_id)
        with contextlib.suppress(Exception):
            holder.release(held.unit_id)
        return verdict

    def _write_and_close(self, held: Held[W], computed: C) -> Verdict:
        try:
            return self._close(held, computed, isolate=False)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning(
                "unit %s: its results were refused (%s); writing them document by document",
                held.unit_id,
                describe(exc, 300),
            )
        try:
            return self._close(held, computed, isolate=True)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.exception("unit %s: its results cannot be stored; failing it", held.unit_id)
            return self._fail(held, f"the results could not be stored: {describe(exc)}")

    def _close(self, held: Held[W], computed: C, *, isolate: bool) -> Verdict:
        with unit_of_work(self.settings) as s:
            job = ledger.lock_job(s, held.job_id)
            unit = s.get(Unit, held.unit_id)
            if unit is None or unit.state != UnitState.running.value:
                return Verdict.superseded
            self.stage.write(s, unit, job, computed, isolate=isolate)
            state = UnitState.cancelled if computed.cancelled else UnitState.done
            ledger.close_unit(
                s,
                unit,
                state,
                reason="job cancelled" if computed.cancelled else None,
                chunks=computed.chunks,
                tokens=computed.tokens,
                limits=self.limits,
            )
            tally = computed.tally()
            documents, reused = accounting.record(s, unit, job, tally)  # in the close: once
            if ledger.finalize_job_if_done(s, job):
                worker_metrics.job_finished(job.status, job.created_at)
            tenant = job.tenant if self.settings.metrics_tenants else "all"
            task = unit.task
        worker_metrics.used(tenant, task, tally.model, documents, reused, tally)
        return Verdict(state.value)

    def _fail(self, held: Held[W], reason: str) -> Verdict:
        with unit_of_work(self.settings) as s:
            job = ledger.lock_job(s, held.job_id)
            unit = s.get(Unit, held.unit_id)
            if unit is None or unit.state != UnitState.running.value:
                return Verdict.superseded
            ledger.close_unit(s, unit, UnitState.failed, reason=reason, limits=self.limits)
            accounting.record(s, unit, job, accounting.Tally())  # its failed documents
            ledger.finalize_job_if_done(s, job)
        return Verdict.failed

    def give_back(self, holder: Holder, unit_id: int) -> None:
        """Through the ledger: a unit we hold goes back to queued (its attempt refunded if
        it was counted) and into the outbox; then its lease is released. If the database
        is unreachable the lease still goes and the reconciler takes the unit back later.
        A unit lost to another worker (``Holdings.lost``) is that worker's: only let go."""
        if holder.holdings.is_lost(unit_id):
            holder.release(unit_id)
            return
        try:
            with unit_of_work(self.settings) as s:
                ledger.release_unit(s, unit_id, refund=holder.holdings.counted(unit_id))
        except Exception:  # the lease period recovers it
            log.exception("could not give back unit %s", unit_id)
        with contextlib.suppress(Exception):
            holder.release(unit_id)

    def _stopped(self, holder: Holder, unit_id: int, exc: BaseException) -> None:
        """Computing ``unit_id`` raised: note why (the claim that gives up on the unit
        reports it) and let the unit go, its attempt spent."""
        if isinstance(exc, Exception) and not is_transient(exc):
            with contextlib.suppress(Exception), unit_of_work(self.settings) as s:
                ledger.note_stop(s, unit_id, f"the worker failed on this unit: {describe(exc)}")
        with contextlib.suppress(Exception):
            holder.release(unit_id)

    # -- a chain of units ------------------------------------------------------------------

    @property
    def queue(self) -> str:
        """The queue this stage's units are on (the worker consumes it)."""
        return self.settings.queue_for(self.stage.task)

    def claim_next(self, holder: Holder) -> Held[W] | None:
        """Claim and prepare the next unit of this stage's queue in fair order
        (docbatch.domain.dispatch.next_units), or None when there is none to claim."""
        if shutdown.stopping():
            return None
        for _ in range(CANDIDATES):
            ids, from_backlog, overtaking = dispatch.next_units(
                self.settings, self.queue, CANDIDATES
            )
            for unit_id in ids:
                claimed = self.claim(holder, unit_id, attempt=False)
                if not isinstance(claimed, Verdict):
                    claimed.overtaking = overtaking
                    return claimed
            if not from_backlog:  # none left, or every unit already sent is held elsewhere
                return None
        return None

    def _order(
        self,
        holder: Holder,
        nxt: Held[W],
        claim_next: Callable[[Holder], Held[W] | None],
        prefetch: Executor,
        clock: ChainClock,
        threaded: bool,
    ) -> tuple[Held[W], Future[Held[W] | None], bool | None]:
        """As a chain moves on to ``nxt`` (claimed ahead, not started): the unit to run
        now, the claim of the one after it, and what starting the first read (None: not
        started yet). The queue's next unit is claimed beside ``nxt`` and runs first if it
        overtakes it (``overtakes``). Inline the claim is made now; on threads it runs
        beside ``nxt``'s compute, unless starting ``nxt`` found such a unit waiting in
        the backlog: then the claim is made now, before ``nxt`` starts."""
        if threaded:
            with clock.timing("start"):
                started = self._begin(holder, nxt, check=True)
            if not isinstance(started, Overtaken):
                with clock.timing("claim_wait"):
                    return nxt, prefetch.submit(claim_next, holder), started
            # Asked once per job: one held back by a quota would otherwise stop every
            # claim of this chain from overlapping its compute.
            self.asked |= started.jobs
        with clock.timing("claim_wait"):  # a failed claim surfaces after nxt, as ever
            claimed = Inline().submit(claim_next, holder)
        new = None if claimed.exception() else claimed.result()
        if new is not None and overtakes(new, nxt):
            log.info(
                "unit %s of job %s goes before unit %s, claimed ahead of it",
                new.unit_id,
                new.job_id,
                nxt.unit_id,
            )
            passed: Future[Held[W] | None] = Inline().submit(lambda: nxt)
            return new, passed, None
        return nxt, claimed, None

    def _timed_claim_next(self, clock: ChainClock) -> Callable[[Holder], Held[W] | None]:
        def claim_next(holder: Holder) -> Held[W] | None:
            with clock.timing("claim"):
                return self.claim_next(holder)

        return claim_next

    def run(self, unit_id: int) -> Verdict:
        """Run ``unit_id`` (and, claiming ahead, the queue's next units); returns what
        became of ``unit_id``."""
        clock = ChainClock()
        try:
            holder = self.holder or holder_for(self.settings)
            with clock.timing("claim"):
                first = self.claim(holder, unit_id)
        except Exception:
            if self.holder is None:
                drop_lease()  # the error may be on the lease connection: open a new one
            raise
        if isinstance(first, Verdict):
            return first
        claim_ahead = self.stage.claim_ahead and self.leased
        threaded = self.stage.threaded and self.leased
        writer: Writer = Writer(self, holder, threaded=threaded, clock=clock)
        prefetch: Executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="docbatch-prefetch")
            if threaded
            else Inline()
        )
        deadline = time.monotonic() + self.settings.worker_chain_seconds
        ahead: Future[Held[W] | None] | None = None
        claim_next = self._timed_claim_next(clock)
        if claim_ahead:
            with clock.timing("claim_wait"):  # inline (on a CPU): the claim itself
                ahead = prefetch.submit(claim_next, holder)
        current, chained = first, 0
        started: bool | None = None  # what the chain's start of ``current`` read
        self.asked = frozenset()
        # Ownership: ``owned`` is the unit we hold and have not handed to the writer (the
        # writer then lets it go); ``ahead``'s result is ours until it is run.
        owned: Held[W] | None = current
        try:
            while True:
                with clock.timing("start"):
                    computed = self.compute(holder, current, started)
                clock.moved("start", "compute", computed.model_seconds)
                interrupted = current.unit_id in self.interrupted
                if interrupted:  # this worker is stopping: another takes the unit now
                    with contextlib.suppress(Exception):
                        self.stage.finished(computed, None)
                    self.give_back(holder, current.unit_id)
                    owned = None
                else:
                    clock.units += 1
                    with clock.timing("write_wait"):
                        writer.put(current, computed)
                    owned = None
                if ahead is None:
                    break
                with clock.timing("claim_wait"):
                    nxt, ahead = ahead.result(), None
                if nxt is None:
                    break
                if interrupted or shutdown.stopping():  # claimed ahead: not ours to run
                    self.give_back(holder, nxt.unit_id)
                    break
                current = owned = nxt
                chained += 1
                started = None
                if time.monotonic() < deadline and writer.error is None:
                    current, ahead, started = self._order(
                        holder, nxt, claim_next, prefetch, clock, threaded
                    )
                    owned = current
        except BaseException as exc:
            if owned is not None:
                if owned.unit_id == unit_id:  # the message's unit: the task retries it
                    self._stopped(holder, unit_id, exc)
                else:
                    self.give_back(holder, owned.unit_id)
            if ahead is not None:
                with contextlib.suppress(BaseException):
                    claimed = ahead.result()
                    if claimed is not None:
                        self.give_back(holder, claimed.unit_id)
            raise
        finally:
            prefetch.shutdown(wait=True)
            write_error = writer.close()
        if write_error is not None:
            raise write_error
        if chained:
            log.info("unit %s: ran %d more units claimed ahead", unit_id, chained)
        log.info("unit %s: %s", unit_id, clock.line())
        if unit_id in self.interrupted:
            log.info("unit %s: given back, this worker is stopping", unit_id)
            return Verdict.given_back
        return writer.verdicts.get(unit_id, Verdict.done)
