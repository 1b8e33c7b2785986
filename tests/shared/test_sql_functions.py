"""shared/migrations/functions.sql is the current definition of every SQL function the
migrations create: the same functions, each defined exactly as a schema migrated to head has it.

The migrations stay frozen history; the file is where a reader finds a function. The file is
run into an empty scratch schema that holds only empty copies of the migrated schema's
tables and views, so it must also be self-contained and in dependency order (a `LANGUAGE
sql` body is checked when it is created). Then both schemas' catalogs are compared.
"""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from shared.migrations import MIGRATIONS_DIR, upgrade
from shared.settings import BaseServiceSettings
from tests.conftest import drop_schema, libpq_url, schedule_policies

pytestmark = pytest.mark.integration

FUNCTIONS_SQL = MIGRATIONS_DIR / "functions.sql"

# (name, argument types): how PostgreSQL itself tells overloads apart.
Key = tuple[str, str]

# One row per function or aggregate of a schema, except those an extension owns (deptype
# 'e'): they come with the extension, not from a migration. Types print unqualified for
# built-ins; the aggregate's support functions by name, and whether they live in the
# aggregate's own schema (a file whose aggregate called the migrated schema's pk_sketch_merge
# would otherwise look equal).
_CATALOG = """
    SELECT p.proname AS name,
           oidvectortypes(p.proargtypes) AS argument_types,
           p.prokind AS kind,
           l.lanname AS language,
           pg_get_function_arguments(p.oid) AS arguments,
           pg_get_function_result(p.oid) AS result,
           p.provolatile AS volatility,
           p.proparallel AS parallel,
           p.proisstrict AS strict,
           p.prosecdef AS security_definer,
           p.proleakproof AS leakproof,
           p.procost AS cost,
           p.prorows AS rows,
           p.proconfig AS config,
           obj_description(p.oid, 'pg_proc') AS comment,
           a.aggkind AS aggregate_kind,
           a.aggtranstype::regtype::text AS aggregate_state_type,
           a.agginitval AS aggregate_initial_value,
           (SELECT f.proname || CASE WHEN f.pronamespace = p.pronamespace THEN '' ELSE ' (in '
                   || f.pronamespace::regnamespace::text || ')' END
            FROM pg_proc f WHERE f.oid = a.aggtransfn) AS aggregate_state_function,
           (SELECT f.proname || CASE WHEN f.pronamespace = p.pronamespace THEN '' ELSE ' (in '
                   || f.pronamespace::regnamespace::text || ')' END
            FROM pg_proc f WHERE f.oid = a.aggcombinefn) AS aggregate_combine_function,
           (SELECT f.proname FROM pg_proc f WHERE f.oid = a.aggfinalfn) AS aggregate_final_function,
           p.prosrc AS body
    FROM pg_proc p
    JOIN pg_language l ON l.oid = p.prolang
    LEFT JOIN pg_aggregate a ON a.aggfnoid = p.oid
    WHERE p.pronamespace = %s::regnamespace
      AND NOT EXISTS (
          SELECT 1 FROM pg_depend d
          WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
      )
"""


@dataclass(frozen=True)
class Definitions:
    # Kept out of the repr: pytest prints the fixture's value on a failure, and the whole
    # catalog buries the message that names the function.
    migrated: dict[Key, dict[str, Any]] = field(repr=False)
    from_file: dict[Key, dict[str, Any]] = field(repr=False)


def _catalog(conn: psycopg.Connection[Any], schema: str) -> dict[Key, dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_CATALOG, (schema,)).fetchall()
    return {(row["name"], row["argument_types"]): row for row in rows}


def _clone_relations(conn: psycopg.Connection[Any], source: str, target: str) -> None:
    """Empty tables shaped like every table and view of `source`, so that the file's SQL
    bodies (checked at creation) resolve their tables in `target` alone."""
    names = conn.execute(
        "SELECT c.relname FROM pg_class c"
        " WHERE c.relnamespace = %s::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')",
        (source,),
    ).fetchall()
    for (name,) in names:
        conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {})").format(
                sql.Identifier(target, name), sql.Identifier(source, name)
            )
        )


def _run_functions_sql(conn: psycopg.Connection[Any], scratch: str) -> None:
    try:
        with conn.transaction():
            # Only the scratch schema: unqualified names in the file must resolve there,
            # never in the migrated schema or public.
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(scratch)))
            # Bytes and no parameters: psycopg sends the script as it is, all its statements.
            conn.execute(FUNCTIONS_SQL.read_bytes())
    except psycopg.Error as exc:
        pytest.fail(
            f"{FUNCTIONS_SQL} does not run in an empty schema (statements out of dependency"
            f" order?): {type(exc).__name__}: {exc}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def definitions(database_url: str) -> Iterator[Definitions]:
    """The functions of a schema migrated to head, and those functions.sql creates in an
    empty scratch schema; both schemas dropped afterwards. Module-scoped: one migration
    serves both tests."""
    migrated = f"t{uuid.uuid4().hex[:12]}"
    scratch = f"{migrated}_sql"
    try:
        upgrade(BaseServiceSettings(database_url=database_url, database_schema=migrated))
        schedule_policies(database_url, migrated, scheduled=False)
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            try:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(scratch)))
                _clone_relations(conn, migrated, scratch)
                _run_functions_sql(conn, scratch)
                yield Definitions(
                    migrated=_catalog(conn, migrated), from_file=_catalog(conn, scratch)
                )
            finally:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(scratch))
                )
    finally:
        drop_schema(database_url, migrated)


def _signature(key: Key) -> str:
    return f"{key[0]}({key[1]})"


def _differences(key: Key, migrated: dict[str, Any], from_file: dict[str, Any]) -> str | None:
    """What differs between the migrated function and the file's, or None."""
    lines = [
        f"  {attribute}: migrations {migrated[attribute]!r}, functions.sql {from_file[attribute]!r}"
        for attribute in migrated
        if attribute != "body" and migrated[attribute] != from_file[attribute]
    ]
    if migrated["body"] != from_file["body"]:
        lines.append("  body:")
        lines.extend(
            "    " + line
            for line in difflib.unified_diff(
                migrated["body"].splitlines(),
                from_file["body"].splitlines(),
                fromfile="migrated to head",
                tofile="functions.sql",
                lineterm="",
            )
        )
        if migrated["body"].splitlines() == from_file["body"].splitlines():
            lines.append("    (only line endings or a trailing newline differ)")
    if not lines:
        return None
    return f"{_signature(key)} differs:\n" + "\n".join(lines)


def test_functions_sql_defines_every_function_the_migrations_create(
    definitions: Definitions,
) -> None:
    missing = sorted(definitions.migrated.keys() - definitions.from_file.keys())
    extra = sorted(definitions.from_file.keys() - definitions.migrated.keys())
    problems = []
    if missing:
        problems.append(
            "created by the migrations, missing from shared/migrations/functions.sql: "
            + ", ".join(map(_signature, missing))
        )
    if extra:
        problems.append(
            "in shared/migrations/functions.sql, not created by the migrations: "
            + ", ".join(map(_signature, extra))
        )
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    # Guards the comparison itself: an empty catalog on both sides would pass.
    assert (
        "kpi_series",
        "text, timestamp with time zone, timestamp with time zone, interval, jsonb",
    ) in definitions.migrated


def test_functions_sql_equals_the_migrated_definitions(definitions: Definitions) -> None:
    problems = [
        difference
        for key in sorted(definitions.from_file.keys() & definitions.migrated.keys())
        if (difference := _differences(key, definitions.migrated[key], definitions.from_file[key]))
    ]
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
