"""The engines on the real PostgreSQL: what a database error may say."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from shared.db import make_engine, make_sync_engine
from shared.settings import BaseServiceSettings

pytestmark = pytest.mark.integration

SECRET = "whsec-do-not-log-4242"


async def test_a_failed_statement_never_shows_its_bound_values(database_url: str) -> None:
    settings = BaseServiceSettings(database_url=database_url)
    engine = make_engine(settings, application_name="test")
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as failed:
                await conn.execute(text("SELECT :secret FROM no_such_table"), {"secret": SECRET})
    finally:
        await engine.dispose()
    assert SECRET not in str(failed.value)
    assert "hidden due to hide_parameters" in str(failed.value)

    sync_engine = make_sync_engine(settings, application_name="test")
    try:
        with sync_engine.connect() as conn, pytest.raises(DBAPIError) as failed_sync:
            conn.execute(text("SELECT :secret FROM no_such_table"), {"secret": SECRET})
    finally:
        sync_engine.dispose()
    assert SECRET not in str(failed_sync.value)
