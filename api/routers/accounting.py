"""/v1/usage: what a tenant used (docbatch.domain.accounting), per day, task or model.

A tenant key sees its own tenant; the admin key (DOCBATCH_ADMIN_KEY) sees every tenant,
or one with ``tenant=``::

    curl -H "Authorization: Bearer $KEY" 'localhost:8000/v1/usage?start=2026-12-01&group_by=task'
"""

from __future__ import annotations

import datetime as dt
import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.security import HTTPAuthorizationCredentials

from docbatch.api.deps import SessionDep, SettingsDep, _authenticate, bearer
from docbatch.domain import accounting
from docbatch.schema.errors import InputError, Unauthorized
from docbatch.schema.tables import utcnow

router = APIRouter(prefix="/v1/usage", tags=["usage"])


def _moment(raw: str | None, field: str, default: dt.datetime) -> dt.datetime:
    if not raw:
        return default
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise InputError(field, f"{raw!r} is not an ISO date or date-time") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@router.get("")
def get_usage(
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    start: str | None = None,
    end: str | None = None,
    group_by: Annotated[accounting.GroupBy, Query()] = "day",
    tenant: str | None = None,
) -> dict[str, Any]:
    """Usage of units finished in ``[start, end)`` (ISO dates or date-times, UTC; default
    the last 30 days), per tenant and ``group_by`` (day, task or model): units, documents,
    reused documents, input and generated tokens, chunks, model seconds, extracted files
    and pages. Exact: a unit run twice is counted once."""
    key = credentials.credentials if credentials is not None else ""
    admin = bool(settings.admin_key) and hmac.compare_digest(
        key.encode(), settings.admin_key.encode()
    )
    if not admin:
        if not key:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        own = _authenticate(key, settings)
        if tenant not in (None, own):
            raise InputError("tenant", "a tenant key sees only its own usage")
        tenant = own
    now = utcnow()
    start_at = _moment(start, "start", now - dt.timedelta(days=30))
    end_at = _moment(end, "end", now + dt.timedelta(seconds=1))
    data = accounting.summary(session, tenant=tenant, start=start_at, end=end_at, group_by=group_by)
    return {
        "start": start_at.isoformat(),
        "end": end_at.isoformat(),
        "group_by": group_by,
        "data": data,
    }
