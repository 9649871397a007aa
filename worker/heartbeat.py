"""Heartbeats and time limits of the units a worker process holds.

The reconciler republishes a running unit whose heartbeat is older than
DOCBATCH_RUNNING_LEASE_SECONDS, so a SIGKILLed/OOM-killed worker's unit is picked up in
about a lease, not after the broker's visibility timeout (hours). A live worker keeps
the heartbeat of **every** unit it holds fresh (the one it runs and those it claimed
ahead), however long they take. It also knows which of them had their attempt counted
(the one computing, or claimed to compute at once) and which were claimed ahead and
have not started: those are charged nothing if the process dies or gives them back.

A worker that is alive but stuck (a hung CUDA call, tokenizer or parser) would keep its
units forever, so each unit gets a time limit while it computes (the stage says how long,
docbatch.domain.retry). Past it, the watchdog notes the reason on the unit (counting its
attempt if it was claimed ahead and ran out of time preparing), gives back the other
units it holds (through the ledger, their attempts refunded if counted), and SIGKILLs
its own process: the prefork pool starts a fresh child, the broker redelivers the
message, and the next claim counts the attempt. The watchdog is a Python thread: a hang
that holds the GIL would stop it too, and is then bounded only by the lease (the
heartbeat stops with it).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from sqlalchemy import update

from docbatch.domain import ledger
from docbatch.domain.outbox import unit_of_work
from docbatch.schema.db import transaction
from docbatch.schema.settings import Settings
from docbatch.schema.tables import Unit, UnitState, utcnow

log = logging.getLogger("docbatch.worker")
# Longest the watchdog spends recording why it stops before it kills the process anyway.
STOP_GRACE_SECONDS = 10.0


def touch(unit_ids: list[int], settings: Settings) -> None:
    with transaction(settings) as s:
        s.execute(
            update(Unit)
            .where(Unit.id.in_(unit_ids), Unit.state == UnitState.running.value)
            .values(heartbeat_at=utcnow())
        )


class Holdings:
    """The units this process holds: one thread heartbeats them all (every
    DOCBATCH_UNIT_HEARTBEAT_SECONDS) and enforces their time limits. ``hold`` when a unit
    is claimed, ``release`` when it is written or given up."""

    def __init__(
        self, settings: Settings, tick: float = 0.25, check: Callable[[], None] | None = None
    ) -> None:
        """``check``: called at every beat before the units are touched (the lease
        connection's: reconnect and take the leases again if it was cut)."""
        self.settings = settings
        self.check = check
        self.every = settings.unit_heartbeat_seconds
        self.tick = min(tick, self.every)
        self._lock = threading.Lock()
        self._units: dict[int, tuple[float, str] | None] = {}  # id -> (deadline, reason)
        self._counted: set[int] = set()  # held units whose attempt is counted
        self._lost: set[int] = set()  # held units whose lease another worker took
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def close(self) -> None:
        """Stop beating (the leases are gone with their connection)."""
        self._closed.set()
        with self._lock:
            self._units.clear()
            self._counted.clear()
            self._lost.clear()

    def hold(self, unit_id: int) -> None:
        with self._lock:
            self._units.setdefault(unit_id, None)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="docbatch-heartbeat", daemon=True
                )
                self._thread.start()

    def limit(self, unit_id: int, seconds: float | None, reason: str = "") -> None:
        """Start (or with None, stop) the unit's clock: past ``seconds`` the process stops."""
        with self._lock:
            if unit_id in self._units:
                self._units[unit_id] = (
                    None if seconds is None else (time.monotonic() + seconds, reason)
                )

    def count(self, unit_id: int) -> None:
        """The held unit's attempt is counted (``ledger.claim_unit`` or
        ``ledger.start_attempt``): giving it back refunds it."""
        with self._lock:
            if unit_id in self._units:
                self._counted.add(unit_id)

    def counted(self, unit_id: int) -> bool:
        with self._lock:
            return unit_id in self._counted

    def release(self, unit_id: int) -> None:
        with self._lock:
            self._units.pop(unit_id, None)
            self._counted.discard(unit_id)
            self._lost.discard(unit_id)

    def lose(self, unit_id: int) -> None:
        """Another worker holds the unit's lease now (this one's connection was cut and
        the unit claimed meanwhile): it is no longer beaten or timed, and this worker
        stops it and writes nothing of it; ``release`` forgets it."""
        with self._lock:
            if unit_id in self._units:
                self._units[unit_id] = None
                self._lost.add(unit_id)

    def is_lost(self, unit_id: int) -> bool:
        with self._lock:
            return unit_id in self._lost

    def held(self) -> list[int]:
        with self._lock:
            return list(self._units)

    def _run(self) -> None:
        last_beat = time.monotonic()
        while not self._closed.wait(self.tick):
            now = time.monotonic()
            with self._lock:
                units = {u: c for u, c in self._units.items() if u not in self._lost}
                counted = set(self._counted)
            for unit_id, clock in units.items():
                if clock is not None and now > clock[0]:
                    others = {u: u in counted for u in units if u != unit_id}
                    self._stop(unit_id, clock[1], unit_id not in counted, others)
            if units and now - last_beat >= self.every:
                last_beat = now
                if self.check is not None:
                    try:
                        self.check()
                    except Exception as exc:  # the database is away: try again next beat
                        log.warning("lease connection check failed: %s", exc)
                    with self._lock:
                        units = {u: c for u, c in self._units.items() if u not in self._lost}
                try:
                    touch(list(units), self.settings)
                except Exception as exc:  # a database blip: try again next beat
                    log.warning("heartbeat of units %s failed: %s", sorted(units), exc)

    def _stop(self, unit_id: int, reason: str, charge: bool, others: dict[int, bool]) -> None:
        """Past a time limit: note why (``charge``: counting the attempt the unit had not
        yet started), give the other units back (``others``: id -> attempt counted, so
        refunded), kill this process."""
        log.error("unit %d: %s; replacing this worker process", unit_id, reason)
        # Kill even if the database does not answer: the lease then frees the units.
        threading.Timer(STOP_GRACE_SECONDS, _kill_self).start()
        try:
            with unit_of_work(self.settings) as s:
                ledger.note_stop(s, unit_id, reason, charge=charge)
                for other, refund in others.items():
                    ledger.release_unit(s, other, refund=refund)
        except Exception:  # dying anyway
            log.exception("could not record the time limit of unit %d", unit_id)
        _kill_self()


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
