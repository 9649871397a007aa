"""The lease connection gives up on a server that does not answer (issue 25 follow-up).

After a cut connection the heartbeat thread reconnects the lease connection and takes
its units' leases again (docbatch.worker.lease). A database host that has vanished, or a
server that accepts TCP and never answers, must not hold that thread (and the time-limit
watchdog beside it) for the minutes TCP would wait: the connection has a connect timeout
of a quarter lease (at least 2 s).
"""

from __future__ import annotations

import socket
import time

import pytest
from sqlalchemy.exc import OperationalError

from docbatch.domain.leases import connect_timeout
from docbatch.worker.lease import _lease_engine

pytestmark = pytest.mark.fast


def test_the_lease_connection_gives_up_on_a_server_that_never_answers() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
    port = silent.getsockname()[1]
    lease_seconds = 8.0
    engine = _lease_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/x", lease_seconds, "")
    try:
        t0 = time.monotonic()
        with pytest.raises(OperationalError):
            engine.connect()
        waited = time.monotonic() - t0
    finally:
        engine.dispose()
        silent.close()
    assert connect_timeout(lease_seconds) == 2
    # libpq's connect_timeout, not TCP's minutes-long retries, ended the wait.
    assert 1.5 <= waited < 2 * lease_seconds, waited
