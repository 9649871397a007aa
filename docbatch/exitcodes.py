"""The ``docbatch`` command's exit codes, which a scheduler (cron, Airflow, systemd) can act
on. ``docbatch submit --wait`` and ``docbatch status JOB --wait`` end with the job's code::

    docbatch status "$JOB" --wait; case $? in 0) load;; 3) load; alert;; 4) rerun;; 5) retry;; esac
"""

from __future__ import annotations

from typing import Any

OK = 0  # done; for a job: completed, every document succeeded
ERROR = 1  # the api refused the request (4xx/5xx), or a local file could not be read/written
USAGE = 2  # bad arguments, bad input file, bad configuration
COMPLETED_WITH_ERRORS = 3  # the job finished, some documents failed (results hold both)
FAILED = 4  # the job failed or was cancelled
UNREACHABLE = 5  # the api could not be reached (connection refused, DNS, timeout)

EPILOG = """exit codes:
  0  completed (every document succeeded)
  1  the api refused the request, or a local file could not be read or written
  2  usage: bad arguments, input or configuration
  3  completed with errors (some documents failed; see `docbatch jobs errors JOB`)
  4  failed or cancelled
  5  the api is unreachable (check --api-url / DOCBATCH_API_URL)"""


def for_status(status: str) -> int:
    """The exit code of a job that ended in ``status`` (a job still running: OK)."""
    if status == "completed_with_errors":
        return COMPLETED_WITH_ERRORS
    if status in ("failed", "cancelled", "cancelling"):
        return FAILED
    return OK


def for_job(job: Any) -> int:
    status = job["status"] if isinstance(job, dict) else job.status
    return for_status(str(status))
