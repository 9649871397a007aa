"""Request dependencies: a database session and the caller's tenant (from the API key)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from schema.db import new_session
from schema.errors import Unauthorized
from schema.settings import Settings, get_settings
from schema.tenants import authenticate

bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `docbatch keys create --tenant NAME`",
)


def get_db() -> Iterator[Session]:
    with new_session() as session:
        yield session


def get_tenant(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The tenant of the request's ``Authorization: Bearer <key>``; 401 otherwise."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer <key>' "
            "(create one with `docbatch keys create --tenant NAME`)"
        )
    with new_session() as session:
        return authenticate(session, credentials.credentials)


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TenantDep = Annotated[str, Depends(get_tenant)]
