"""Init container of every Pacekeeper Deployment: wait until the database schema is at the
Alembic head(s) of this image, then exit 0 so the service starts.

The `migrate` Job is the only migrator (Alembic takes no lock, so migrations must not run
in every pod at once); this wait keeps a pod from running against a schema older than its
code, whatever order the objects were applied in. A database at a revision this image does
not know was migrated by a newer image: the pod starts, as an older pod does during a
rolling upgrade. Gives up (exit 1, and the kubelet tries again) after `--timeout` seconds.
"""

from __future__ import annotations

import argparse
import logging
import time

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from shared.db import make_sync_engine
from shared.logging import configure_logging
from shared.migrations import alembic_config
from shared.settings import BaseServiceSettings

log = logging.getLogger("pacekeeper.wait_for_schema")


def image_revisions() -> tuple[set[str], set[str]]:
    """(heads, every revision) of the migrations shipped in this image."""
    script = ScriptDirectory.from_config(alembic_config())
    return set(script.get_heads()), {rev.revision for rev in script.walk_revisions()}


def database_revisions(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        # The version table of the connection's schema, as migrations/env.py writes it.
        return set(MigrationContext.configure(connection).get_current_heads())


def verdict(current: set[str], heads: set[str], known: set[str]) -> str | None:
    """None when the service may start, else what it is waiting for."""
    if current == heads or current - known:
        return None
    found = ", ".join(sorted(current)) or "no revision"
    return f"database at {found}; this image needs {', '.join(sorted(heads))}"


def wait(timeout: float, interval: float) -> int:
    settings = BaseServiceSettings()
    configure_logging(settings.log_level, json=settings.log_json)
    heads, known = image_revisions()
    engine = make_sync_engine(settings, application_name="pacekeeper-wait-for-schema")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                waiting = verdict(database_revisions(engine), heads, known)
            except SQLAlchemyError as exc:
                waiting = f"database not reachable: {str(exc).splitlines()[0][:200]}"
            if waiting is None:
                log.info("schema is current", extra={"heads": sorted(heads)})
                return 0
            if time.monotonic() >= deadline:
                log.error("gave up waiting for the migrate Job", extra={"reason": waiting})
                return 1
            log.info("waiting for the migrate Job", extra={"reason": waiting})
            time.sleep(interval)
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description="Wait until the schema is at this image's heads.")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between looks")
    args = parser.parse_args()
    raise SystemExit(wait(args.timeout, args.interval))


if __name__ == "__main__":
    main()
