"""Request dependencies: a database session and the caller's tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from schema.db import new_session
from schema.settings import Settings, get_settings


def get_db() -> Iterator[Session]:
    with new_session() as session:
        yield session


def get_tenant() -> str:
    return "default"


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TenantDep = Annotated[str, Depends(get_tenant)]
