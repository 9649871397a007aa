"""How a unit is retried: the one home of the rules.

An **attempt** is counted when a worker starts working on a unit: at the claim of the
unit its message names (``ledger.claim_unit``), and for a unit claimed ahead while
another computes, when it starts computing (``ledger.start_attempt``), so a worker
killed by one unit never charges the unit it had claimed ahead beside it. What happens
next:

- the unit is written and closed: the attempt is spent, whatever the documents' fate;
- its worker dies or is replaced past the unit's **time limit**: the next claim counts
  another attempt; once ``split_after_stops`` attempts stopped a worker, the unit is
  **bisected** at its next claim, so a document that kills its worker ends up alone; a
  one-document unit claimed ``max_attempts`` times is **failed** with the reason its
  last worker recorded (``gave_up_reason``);
- its result write meets a **transient** error (the database or broker went away,
  ``is_transient``): the unit is given back with the attempt **refunded**
  (``ledger.release_unit``; a unit claimed ahead and given back before it started had
  nothing counted, so nothing is refunded), and the task retries later;
- its result write meets any other error: nothing is refunded; the documents whose rows
  the database refuses fail alone with the reason (docbatch.worker.runner), so a result
  that can never be stored ends the unit instead of being recomputed forever.

A Celery retry after a database or broker blip claims again; those claims must not use
up the attempts meant for workers that die, so ``with_extra_attempts`` raises the cap by
the task's retry count (finite: a redelivered message keeps its count).

Example::

    policy = RetryPolicy.of(settings).with_extra_attempts(task.request.retries)
    ledger.claim_unit(session, unit_id, worker, policy)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy.exc import DBAPIError, InterfaceError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from docbatch.schema.settings import Settings
from docbatch.schema.tables import Unit

# SQLSTATE classes of errors that go away by themselves: connection exceptions (08),
# operator intervention (57: admin shutdown, pg_terminate_backend), insufficient
# resources (53), transaction rollback (40: serialization failure, deadlock), and lock
# not available (55P03).
TRANSIENT_SQLSTATE_CLASSES = ("08", "57", "53", "40")
TRANSIENT_SQLSTATES = ("55P03",)


@dataclass(frozen=True)
class RetryPolicy:
    """The attempt cap, when to bisect, and how long an attempt may run."""

    max_attempts: int = 3
    # A unit whose workers stopped this many times without closing it is split in two on
    # its next claim.
    split_after_stops: int = 2
    time_limit_base_seconds: float = 300.0
    time_limit_seconds_per_1k_tokens: float = 60.0

    @classmethod
    def of(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.max_unit_attempts,
            time_limit_base_seconds=settings.unit_time_limit_base_seconds,
            time_limit_seconds_per_1k_tokens=settings.unit_time_limit_seconds_per_1k_tokens,
        )

    def with_extra_attempts(self, extra: int) -> RetryPolicy:
        """This policy with the cap raised by ``extra`` (claims made by task retries)."""
        return replace(self, max_attempts=self.max_attempts + extra) if extra else self

    def should_split(self, unit: Unit) -> bool:
        return unit.seq_hi > unit.seq_lo and unit.attempts >= self.split_after_stops

    def gives_up(self, unit: Unit) -> bool:
        return unit.attempts >= self.max_attempts

    def gave_up_reason(self, unit: Unit) -> str:
        if unit.error:  # what the last attempt's worker recorded before it was replaced
            why = unit.error
        elif unit.seq_lo == unit.seq_hi:
            why = f"this document killed the worker {unit.attempts} times (out of memory or crash?)"
        else:
            why = "the worker processing this unit stopped each time (out of memory or crash?)"
        return (
            f"gave up after {unit.attempts} attempts: {why}; "
            f"DOCBATCH_MAX_UNIT_ATTEMPTS={self.max_attempts}"
        )

    @property
    def time_limits(self) -> bool:
        return self.time_limit_base_seconds > 0

    def time_limit(self, tokens: int) -> float | None:
        """Seconds a model unit of ``tokens`` tokens may run; None when limits are off."""
        if not self.time_limits:
            return None
        return self.time_limit_base_seconds + self.time_limit_seconds_per_1k_tokens * tokens / 1000

    def time_limit_reason(self, tokens: int, seconds: float) -> str:
        return (
            f"the attempt ran past its time limit of {seconds:.0f} s "
            f"(DOCBATCH_UNIT_TIME_LIMIT_BASE_SECONDS={self.time_limit_base_seconds:g} + "
            f"DOCBATCH_UNIT_TIME_LIMIT_SECONDS_PER_1K_TOKENS="
            f"{self.time_limit_seconds_per_1k_tokens:g} per 1,000 of its {tokens} "
            "tokens) and its worker process was replaced"
        )


def extract_time_limit(
    policy: RetryPolicy, files: int, seconds_per_file: float
) -> tuple[float, str] | None:
    """(seconds, reason) an extract unit of ``files`` files may run: the base plus each
    file's own limit (DOCBATCH_EXTRACT_TIME_LIMIT_SECONDS, enforced per file by the
    sandbox); None when limits are off."""
    if not policy.time_limits:
        return None
    seconds = policy.time_limit_base_seconds + seconds_per_file * max(1, files)
    reason = (
        f"the attempt ran past its time limit of {seconds:.0f} s "
        f"(DOCBATCH_UNIT_TIME_LIMIT_BASE_SECONDS={policy.time_limit_base_seconds:g} + "
        f"DOCBATCH_EXTRACT_TIME_LIMIT_SECONDS={seconds_per_file:g} for each of its {files} "
        "files) and its worker process was replaced"
    )
    return seconds, reason


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error (or of the driver error it wraps), if any."""
    orig = getattr(exc, "orig", exc)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return str(state) if state else None


def is_transient(exc: BaseException) -> bool:
    """Would the same work succeed if tried again later, unchanged? True for a lost or
    refused connection, a server shutting down, a deadlock or serialization failure, a
    full pool, a broker that went away; False for anything about the data itself (a
    value the database refuses, a type it cannot store, a server limit)."""
    if isinstance(exc, ConnectionError | PoolTimeout | InterfaceError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        state = sqlstate(exc)
        if state is None:  # the driver lost the connection before the server said anything
            return type(exc.orig).__name__ in ("OperationalError", "InterfaceError")
        return state[:2] in TRANSIENT_SQLSTATE_CLASSES or state in TRANSIENT_SQLSTATES
    return False


def describe(exc: BaseException, limit: int = 2000) -> str:
    """An error as a document's or unit's reason: the driver's words for a database error,
    never a NUL (Postgres text cannot hold one), at most ``limit`` characters."""
    orig = getattr(exc, "orig", None) or exc
    text = f"{type(orig).__name__}: {orig}".replace("\x00", "\\x00")
    return text[:limit]
