"""/v1/admin/keys: tenant keys created, listed and revoked with the admin key
(DOCBATCH_ADMIN_KEY), every change audited (the admin_audit table and the log).

The admin key is not a tenant key: a tenant key here gets 403, and with no admin key
configured the routes answer 404 (they do not exist). Example::

    curl -H "Authorization: Bearer $DOCBATCH_ADMIN_KEY" -d '{"tenant": "acme"}' \\
        -H 'Content-Type: application/json' https://docbatch.example/v1/admin/keys
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials

from docbatch.api.deps import SessionDep, SettingsDep, bearer, forget_key
from docbatch.api.logs import request_id_of
from docbatch.domain import tenants
from docbatch.schema.db import transaction
from docbatch.schema.errors import Forbidden, NotFound, Unauthorized
from docbatch.schema.models import KeyCreate, KeyPublic, KeysPublic
from docbatch.schema.tables import ApiKey

router = APIRouter(prefix="/v1/admin", tags=["admin"])


async def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    if not settings.admin_key:
        raise NotFound("no admin routes: DOCBATCH_ADMIN_KEY is not set on this api")
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing admin key: send 'Authorization: Bearer <DOCBATCH_ADMIN_KEY>'")
    if not hmac.compare_digest(credentials.credentials.encode(), settings.admin_key.encode()):
        raise Forbidden("this route needs the admin key (DOCBATCH_ADMIN_KEY), not a tenant key")


AdminDep = Depends(require_admin)


def _public(row: ApiKey, key: str | None = None) -> KeyPublic:
    return KeyPublic(
        id=row.key_id,
        tenant=row.tenant,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        key=key,
    )


def _client(request: Request) -> str | None:
    return f"{request.client.host}:{request.client.port}" if request.client else None


@router.post("/keys", status_code=201, dependencies=[AdminDep])
async def create_key(body: KeyCreate, request: Request, settings: SettingsDep) -> KeyPublic:
    def create() -> KeyPublic:
        with transaction(settings) as s:
            new = tenants.create_key(s, body.tenant)
            tenants.audit(
                s,
                "key.create",
                tenant=new.tenant,
                key_id=new.key_id,
                client=_client(request),
                request_id=request_id_of(request),
            )
            row = s.get(ApiKey, new.key_id)
            assert row is not None
            return _public(row, new.key)

    return await run_in_threadpool(create)


@router.get("/keys", dependencies=[AdminDep])
def list_keys(session: SessionDep, tenant: str | None = None) -> KeysPublic:
    rows = tenants.list_keys(session, tenant)
    return KeysPublic(data=[_public(r) for r in rows], count=len(rows))


@router.delete("/keys/{key_id}", dependencies=[AdminDep])
def revoke_key(key_id: str, request: Request, settings: SettingsDep) -> KeyPublic:
    with transaction(settings) as s:
        row = tenants.revoke_key(s, key_id)
        tenants.audit(
            s,
            "key.revoke",
            tenant=row.tenant,
            key_id=row.key_id,
            client=_client(request),
            request_id=request_id_of(request),
        )
        public = _public(row)
    forget_key(public.id)
    return public
