"""Request dependencies: a database session and the caller's tenant (from the API key)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from docbatch.domain.tenants import authenticate, hash_key, key_id_of
from docbatch.schema.db import new_session
from docbatch.schema.errors import Unauthorized
from docbatch.schema.logs import add_to_context
from docbatch.schema.settings import Settings, get_settings

bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `docbatch keys create --tenant NAME`",
)


def get_db(settings: Annotated[Settings, Depends(get_settings)]) -> Iterator[Session]:
    with new_session(settings) as session:
        yield session


# hash of a key -> (tenant, valid until, key id): a revoked key stops working within
# DOCBATCH_API_KEY_CACHE_SECONDS (at once on the replica that revoked it: forget_key);
# saves a database round trip on every request.
_key_cache: dict[str, tuple[str, float, str]] = {}
_KEY_CACHE_MAX = 10_000


async def get_tenant(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The tenant of the request's ``Authorization: Bearer <key>``; 401 otherwise.

    Async, so a cached key costs no thread hop (every request passes here); only a key not
    seen for ``DOCBATCH_API_KEY_CACHE_SECONDS`` goes to the database, in a thread."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer <key>' "
            "(create one with `docbatch keys create --tenant NAME`)"
        )
    settings = get_settings()
    key = credentials.credentials
    digest = hash_key(key)
    now = time.monotonic()
    cached = _key_cache.get(digest) if settings.api_key_cache_seconds > 0 else None
    if cached is not None and cached[1] > now:
        add_to_context(tenant=cached[0])
        return cached[0]
    tenant = await run_in_threadpool(_authenticate, key, settings)
    add_to_context(tenant=tenant)
    if settings.api_key_cache_seconds > 0:
        if len(_key_cache) >= _KEY_CACHE_MAX:
            _key_cache.clear()
        _key_cache[digest] = (tenant, now + settings.api_key_cache_seconds, key_id_of(key))
    return tenant


def forget_key(key_id: str) -> None:
    """Drop a revoked key from this process's cache."""
    for digest, (_, _, cached_id) in list(_key_cache.items()):
        if cached_id == key_id:
            _key_cache.pop(digest, None)


def _authenticate(key: str, settings: Settings) -> str:
    with new_session(settings) as session:
        return authenticate(session, key)


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TenantDep = Annotated[str, Depends(get_tenant)]
