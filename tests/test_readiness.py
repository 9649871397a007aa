"""/readyz is unauthenticated: it names the component that is down and nothing more; the
reason goes to the api's log (a real uvicorn api pointed at servers that refuse it)."""

from __future__ import annotations

import httpx

from tests.procs import ApiProcess, free_port, log_tail, wait_http


def test_readyz_says_which_component_is_down_without_the_exception():
    # A database that does not exist (the server answers with its name and the user) and
    # a broker port nobody listens on.
    database = "postgresql+psycopg://postgres:pw-not-for-you@127.0.0.1:5432/no_such_db_readyz"
    broker = f"redis://127.0.0.1:{free_port()}/0"
    api = ApiProcess(
        {"DOCBATCH_DATABASE_URL": database, "DOCBATCH_BROKER_URL": broker}, migrate=False
    )
    try:
        resp = wait_http(f"{api.url}/readyz", api.proc, api.log_name, status=503)
        assert resp.json() == {
            "status": "unavailable",
            "checks": {"database": "down", "broker": "down"},
        }
        for leak in ("no_such_db_readyz", "pw-not-for-you", "Error", "refused", "postgres"):
            assert leak not in resp.text, resp.text
        assert httpx.get(f"{api.url}/healthz", timeout=10).json() == {"status": "ok"}
        # The operator still finds out why, in the api's log.
        log = log_tail(api.log_name, 20000)
        assert "no_such_db_readyz" in log and "readiness: the database does not answer" in log
    finally:
        api.stop()
