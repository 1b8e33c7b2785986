"""All SQL of the alerts service. The caller owns the transaction; nothing here commits.

KPIs are read only through the aggregator's `kpi_value` / `kpi_series`, the one definition
of KPI math. The single exception is `dimension_values`, which lists the dimension values
present in a window (the functions compute values, they do not enumerate groups).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts.evaluation.lifecycle import AlertState, State
from services.alerts.evaluation.rules import Query
from services.alerts.silence import Matcher, Silence


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


# --- KPI reads ------------------------------------------------------------------------


async def kpi_values(session: AsyncSession, queries: Sequence[Query]) -> dict[Query, float | None]:
    """Many `kpi_value` calls in one round trip."""
    if not queries:
        return {}
    rows = await session.execute(
        text(
            "SELECT q.i, kpi_value(q.kpi, q.t_from, q.t_to, q.dims)"
            " FROM unnest(CAST(:kpis AS text[]), CAST(:froms AS timestamptz[]),"
            " CAST(:tos AS timestamptz[]), CAST(CAST(:dims AS text[]) AS jsonb[]))"
            " WITH ORDINALITY AS q(kpi, t_from, t_to, dims, i)"
        ),
        {
            "kpis": [q.kpi for q in queries],
            "froms": [q.t_from for q in queries],
            "tos": [q.t_to for q in queries],
            "dims": [_json(dict(q.dims)) if q.dims else None for q in queries],
        },
    )
    return {queries[int(i) - 1]: (None if v is None else float(v)) for i, v in rows}


async def kpi_series(
    session: AsyncSession,
    kpi: str,
    t_from: datetime,
    t_to: datetime,
    step: timedelta,
    dims: Mapping[str, str] | None,
) -> list[tuple[datetime, float | None]]:
    rows = await session.execute(
        text(
            "SELECT time, value FROM kpi_series(:kpi, :t_from, :t_to, :step,"
            " CAST(:dims AS jsonb)) ORDER BY time"
        ),
        {
            "kpi": kpi,
            "t_from": t_from,
            "t_to": t_to,
            "step": step,
            "dims": _json(dict(dims)) if dims else None,
        },
    )
    return [(t, None if v is None else float(v)) for t, v in rows]


async def dimension_values(
    session: AsyncSession, kpis: Sequence[str], t_from: datetime, t_to: datetime
) -> list[dict[str, str]]:
    """The distinct dimension sets of these (base) KPIs with data in `[t_from, t_to)`."""
    rows = await session.execute(
        text(
            "SELECT DISTINCT dims FROM kpi_points"
            " WHERE kpi = ANY(:kpis) AND bucket >= :t_from AND bucket < :t_to"
        ),
        {"kpis": list(kpis), "t_from": t_from, "t_to": t_to},
    )
    return [{str(k): str(v) for k, v in dims.items()} for (dims,) in rows]


async def watermark(session: AsyncSession, topic: str) -> datetime | None:
    """The aggregator's watermark on the events topic: minutes before it are complete on
    every partition that has seen data (the view takes the minimum over partitions). None
    before any event was aggregated."""
    value = (
        await session.execute(
            text("SELECT min(watermark) FROM kpi_watermarks WHERE topic = :topic"),
            {"topic": topic},
        )
    ).scalar_one()
    return value if isinstance(value, datetime) else None


# Per config table: row count, version sum and newest change. Deleting, adding or editing
# any definition changes at least one of the three.
_DIGEST_SQL = (
    "SELECT "
    + ", ".join(
        f"(SELECT count(*) || ':' || coalesce(sum(version), 0) || ':' ||"
        f" coalesce(max(updated_at)::text, '') FROM {table})"
        for table in ("kpis", "rules", "goals", "channels")
    )
    + ", (SELECT value FROM app_settings WHERE key = 'timezone')"
)


async def config_digest(session: AsyncSession) -> tuple[Any, ...]:
    """Changes whenever any definition or the time zone changes: a cheap reload check."""
    return tuple((await session.execute(text(_DIGEST_SQL))).one())


# --- alerts ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One fingerprint's alert as the evaluator keeps it in memory and in `alerts`."""

    fingerprint: str
    origin: str  # rule | goal
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    dims: Mapping[str, str]
    channels: tuple[str, ...]
    state: AlertState
    value: float | None = None
    context: Mapping[str, Any] | None = None


_ALERT_COLUMNS = (
    "fingerprint, origin, name, labels, annotations, dims, channels, state, episode,"
    " active_at, fired_at, resolved_at, last_breach_at, value, context"
)


def _record(row: Any) -> AlertRecord:
    return AlertRecord(
        fingerprint=row.fingerprint,
        origin=row.origin,
        name=row.name,
        labels=row.labels,
        annotations=row.annotations,
        dims=row.dims,
        channels=tuple(row.channels),
        state=AlertState(
            state=State(row.state),
            episode=row.episode,
            active_at=row.active_at,
            fired_at=row.fired_at,
            resolved_at=row.resolved_at,
            last_breach_at=row.last_breach_at,
        ),
        value=row.value,
        context=row.context,
    )


async def load_alerts(session: AsyncSession) -> list[AlertRecord]:
    """Every alert still on record: live ones, and resolved ones whose episode numbers must
    carry on if they break again (old rows are purged after the retention)."""
    rows = await session.execute(text(f"SELECT {_ALERT_COLUMNS} FROM alerts"))
    return [_record(r) for r in rows]


async def save_alerts(session: AsyncSession, records: Iterable[AlertRecord]) -> int:
    params = [
        {
            "fingerprint": r.fingerprint,
            "origin": r.origin,
            "name": r.name,
            "labels": _json(r.labels),
            "annotations": _json(r.annotations),
            "dims": _json(r.dims),
            "channels": list(r.channels),
            "state": r.state.state.value,
            "episode": r.state.episode,
            "active_at": r.state.active_at,
            "fired_at": r.state.fired_at,
            "resolved_at": r.state.resolved_at,
            "last_breach_at": r.state.last_breach_at,
            "value": r.value,
            "context": _json(r.context or {}),
        }
        for r in records
    ]
    if not params:
        return 0
    await session.execute(
        text(
            f"INSERT INTO alerts ({_ALERT_COLUMNS}) VALUES (:fingerprint, :origin, :name,"
            " CAST(:labels AS jsonb), CAST(:annotations AS jsonb), CAST(:dims AS jsonb),"
            " :channels, :state, :episode, :active_at, :fired_at, :resolved_at,"
            " :last_breach_at, :value, CAST(:context AS jsonb))"
            " ON CONFLICT (fingerprint) DO UPDATE SET labels = EXCLUDED.labels,"
            " annotations = EXCLUDED.annotations, dims = EXCLUDED.dims,"
            " channels = EXCLUDED.channels, state = EXCLUDED.state,"
            " episode = EXCLUDED.episode, active_at = EXCLUDED.active_at,"
            " fired_at = EXCLUDED.fired_at, resolved_at = EXCLUDED.resolved_at,"
            " last_breach_at = EXCLUDED.last_breach_at, value = EXCLUDED.value,"
            " context = EXCLUDED.context, updated_at = now()"
        ),
        params,
    )
    return len(params)


async def purge_resolved(session: AsyncSession, before: datetime) -> list[str]:
    """Forget alerts resolved (or cleared) before `before`, with their acknowledgements."""
    rows = await session.execute(
        text(
            "DELETE FROM alerts WHERE (state = 'resolved' AND resolved_at < :before)"
            " OR (state = 'inactive' AND updated_at < :before) RETURNING fingerprint"
        ),
        {"before": before},
    )
    gone = [r[0] for r in rows]
    await session.execute(
        text(
            "DELETE FROM acknowledgements k WHERE NOT EXISTS (SELECT 1 FROM alerts a"
            " WHERE a.fingerprint = k.fingerprint AND a.episode = k.episode)"
        )
    )
    return gone


async def list_alerts(
    session: AsyncSession, *, states: Sequence[str] | None, limit: int
) -> list[dict[str, Any]]:
    rows = await session.execute(
        text(
            "SELECT a.id, a.fingerprint, a.origin, a.name, a.labels, a.annotations, a.dims,"
            " a.channels, a.state, a.episode, a.active_at, a.fired_at, a.resolved_at,"
            " a.value, a.context, k.acked_by, k.comment AS ack_comment,"
            " k.created_at AS acked_at"
            " FROM alerts a LEFT JOIN acknowledgements k"
            " ON k.fingerprint = a.fingerprint AND k.episode = a.episode"
            " WHERE a.state <> 'inactive'"
            " AND (CAST(:states AS text[]) IS NULL OR a.state = ANY(CAST(:states AS text[])))"
            " ORDER BY (a.state = 'firing') DESC, a.updated_at DESC LIMIT :limit"
        ),
        {"states": list(states) if states else None, "limit": limit},
    )
    return [dict(r._mapping) for r in rows]


async def alert_episode(session: AsyncSession, alert_id: int) -> tuple[str, int, str] | None:
    row = (
        await session.execute(
            text("SELECT fingerprint, episode, state FROM alerts WHERE id = :id"),
            {"id": alert_id},
        )
    ).first()
    return None if row is None else (row[0], row[1], row[2])


async def acknowledge(
    session: AsyncSession, fingerprint: str, episode: int, by: str, comment: str
) -> None:
    await session.execute(
        text(
            "INSERT INTO acknowledgements (fingerprint, episode, acked_by, comment)"
            " VALUES (:fp, :ep, :by, :comment) ON CONFLICT (fingerprint, episode) DO UPDATE"
            " SET acked_by = EXCLUDED.acked_by, comment = EXCLUDED.comment"
        ),
        {"fp": fingerprint, "ep": episode, "by": by, "comment": comment},
    )


async def acked_fingerprints(session: AsyncSession) -> frozenset[str]:
    """Fingerprints whose current episode is acknowledged."""
    rows = await session.execute(
        text(
            "SELECT a.fingerprint FROM alerts a JOIN acknowledgements k"
            " ON k.fingerprint = a.fingerprint AND k.episode = a.episode"
            " WHERE a.state IN ('pending', 'firing')"
        )
    )
    return frozenset(r[0] for r in rows)


# --- silences -------------------------------------------------------------------------


async def active_silences(session: AsyncSession, now: datetime) -> list[Silence]:
    rows = await session.execute(
        text(
            "SELECT id, matchers, starts_at, ends_at FROM silences"
            " WHERE starts_at <= :now AND ends_at > :now"
        ),
        {"now": now},
    )
    return [
        Silence(
            id=r.id,
            matchers=tuple(Matcher.model_validate(m) for m in r.matchers),
            starts_at=r.starts_at,
            ends_at=r.ends_at,
        )
        for r in rows
    ]


async def list_silences(session: AsyncSession, *, include_expired: bool) -> list[dict[str, Any]]:
    rows = await session.execute(
        text(
            "SELECT id, matchers, starts_at, ends_at, created_by, comment, created_at"
            " FROM silences WHERE :all OR ends_at > now() ORDER BY id"
        ),
        {"all": include_expired},
    )
    return [dict(r._mapping) for r in rows]


async def create_silence(
    session: AsyncSession,
    matchers: Sequence[Matcher],
    starts_at: datetime,
    ends_at: datetime,
    created_by: str,
    comment: str,
) -> dict[str, Any]:
    row = (
        await session.execute(
            text(
                "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment)"
                " VALUES (CAST(:matchers AS jsonb), :starts_at, :ends_at, :by, :comment)"
                " RETURNING id, matchers, starts_at, ends_at, created_by, comment, created_at"
            ),
            {
                "matchers": _json([m.model_dump(mode="json") for m in matchers]),
                "starts_at": starts_at,
                "ends_at": ends_at,
                "by": created_by,
                "comment": comment,
            },
        )
    ).one()
    return dict(row._mapping)


async def expire_silence(session: AsyncSession, silence_id: int) -> bool:
    """Ends a silence now (kept for the record, as Alertmanager does)."""
    row = (
        await session.execute(
            text(
                "UPDATE silences SET ends_at = greatest(now(), starts_at + interval '1 ms')"
                " WHERE id = :id AND ends_at > now() RETURNING id"
            ),
            {"id": silence_id},
        )
    ).first()
    return row is not None


# --- notification groups and the outbox -----------------------------------------------


async def load_groups(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(
        text(
            "SELECT channel, group_key, group_labels, created_at, last_flush_at, notified, seq"
            " FROM alert_groups"
        )
    )
    return [dict(r._mapping) for r in rows]


async def save_group(session: AsyncSession, group: Mapping[str, Any]) -> None:
    await session.execute(
        text(
            "INSERT INTO alert_groups (channel, group_key, group_labels, created_at,"
            " last_flush_at, notified, seq) VALUES (:channel, :group_key,"
            " CAST(:group_labels AS jsonb), :created_at, :last_flush_at,"
            " CAST(:notified AS jsonb), :seq)"
            " ON CONFLICT (channel, group_key) DO UPDATE SET"
            " last_flush_at = EXCLUDED.last_flush_at, notified = EXCLUDED.notified,"
            " seq = EXCLUDED.seq"
        ),
        {
            **group,
            "group_labels": _json(group["group_labels"]),
            "notified": _json(group["notified"]),
        },
    )


async def delete_group(session: AsyncSession, channel: str, group_key: str) -> None:
    await session.execute(
        text("DELETE FROM alert_groups WHERE channel = :c AND group_key = :k"),
        {"c": channel, "k": group_key},
    )


async def enqueue_delivery(
    session: AsyncSession,
    *,
    channel: str,
    group_key: str,
    seq: int,
    idempotency_key: str,
    payload: Mapping[str, Any],
) -> int:
    return int(
        (
            await session.execute(
                text(
                    "INSERT INTO deliveries (channel, group_key, seq, idempotency_key, payload)"
                    " VALUES (:channel, :group_key, :seq, :key, CAST(:payload AS jsonb))"
                    " RETURNING id"
                ),
                {
                    "channel": channel,
                    "group_key": group_key,
                    "seq": seq,
                    "key": idempotency_key,
                    "payload": _json(payload),
                },
            )
        ).scalar_one()
    )


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    channel: str
    idempotency_key: str
    payload: Mapping[str, Any]
    attempts: int
    created_at: datetime


async def due_deliveries(
    session: AsyncSession, now: datetime, *, limit: int, exclude: Sequence[int]
) -> list[Delivery]:
    rows = await session.execute(
        text(
            "SELECT id, channel, idempotency_key, payload, attempts, created_at FROM deliveries"
            " WHERE status = 'pending' AND next_attempt_at <= :now AND NOT (id = ANY(:exclude))"
            " ORDER BY next_attempt_at, id LIMIT :limit"
        ),
        {"now": now, "limit": limit, "exclude": list(exclude)},
    )
    return [Delivery(*r) for r in rows]


async def next_delivery_at(session: AsyncSession) -> datetime | None:
    value = (
        await session.execute(
            text("SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending'")
        )
    ).scalar_one()
    return value if isinstance(value, datetime) else None


async def queue_depth(session: AsyncSession) -> int:
    return int(
        (
            await session.execute(text("SELECT count(*) FROM deliveries WHERE status = 'pending'"))
        ).scalar_one()
    )


async def record_attempt(
    session: AsyncSession,
    *,
    delivery_id: int,
    channel: str,
    attempt: int,
    ok: bool,
    retryable: bool | None,
    http_status: int | None,
    error: str | None,
    started_at: datetime,
    duration_ms: float,
    next_attempt_at: datetime | None,
    final: bool,
) -> None:
    """One attempt into `notifications`, and the delivery's new status in the same breath."""
    await session.execute(
        text(
            "INSERT INTO notifications (delivery_id, channel, attempt, status, retryable,"
            " http_status, error, started_at, duration_ms) VALUES (:id, :channel, :attempt,"
            " :status, :retryable, :http_status, :error, :started_at, :duration_ms)"
        ),
        {
            "id": delivery_id,
            "channel": channel,
            "attempt": attempt,
            "status": "sent" if ok else "failed",
            "retryable": retryable,
            "http_status": http_status,
            "error": error,
            "started_at": started_at,
            "duration_ms": duration_ms,
        },
    )
    status = "delivered" if ok else ("failed" if final else "pending")
    await session.execute(
        text(
            "UPDATE deliveries SET attempts = :attempt, status = :status,"
            " last_error = :error, next_attempt_at = coalesce(:next, next_attempt_at),"
            " delivered_at = CASE WHEN :ok THEN now() END WHERE id = :id"
        ),
        {
            "id": delivery_id,
            "attempt": attempt,
            "status": status,
            "error": error,
            "next": next_attempt_at,
            "ok": ok,
        },
    )


async def fail_delivery(session: AsyncSession, delivery_id: int, reason: str) -> None:
    await session.execute(
        text("UPDATE deliveries SET status = 'failed', last_error = :r WHERE id = :id"),
        {"id": delivery_id, "r": reason},
    )


async def list_notifications(session: AsyncSession, *, limit: int) -> list[dict[str, Any]]:
    rows = await session.execute(
        text(
            "SELECT n.id, n.delivery_id, n.channel, n.attempt, n.status, n.retryable,"
            " n.http_status, n.error, n.started_at, n.duration_ms, d.idempotency_key,"
            " d.status AS delivery_status FROM notifications n"
            " JOIN deliveries d ON d.id = n.delivery_id ORDER BY n.id DESC LIMIT :limit"
        ),
        {"limit": limit},
    )
    return [dict(r._mapping) for r in rows]


# --- goals ----------------------------------------------------------------------------


async def last_goal_statuses(session: AsyncSession) -> dict[str, tuple[str, datetime]]:
    rows = await session.execute(
        text(
            "SELECT DISTINCT ON (goal) goal, status, period_start FROM goal_status"
            " ORDER BY goal, evaluated_at DESC, id DESC"
        )
    )
    return {r[0]: (r[1], r[2]) for r in rows}


async def insert_goal_status(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        await session.execute(
            text(
                "INSERT INTO goal_status (goal, period_start, period_end, status, value,"
                " target, expected, projection, evaluated_at) VALUES (:goal, :period_start,"
                " :period_end, :status, :value, :target, :expected, :projection, :evaluated_at)"
            ),
            list(rows),
        )


async def goal_history(session: AsyncSession, goal: str, limit: int) -> list[dict[str, Any]]:
    rows = await session.execute(
        text(
            "SELECT period_start, period_end, status, value, target, expected, projection,"
            " evaluated_at FROM goal_status WHERE goal = :goal"
            " ORDER BY evaluated_at DESC, id DESC LIMIT :limit"
        ),
        {"goal": goal, "limit": limit},
    )
    return [dict(r._mapping) for r in rows]


# --- evaluator lease (bookkeeping beside the advisory lock) ----------------------------


async def take_lease(session: AsyncSession, name: str, holder: str) -> int:
    return int(
        (
            await session.execute(
                text(
                    "INSERT INTO evaluator_lease (name, holder, epoch, acquired_at, heartbeat_at)"
                    " VALUES (:name, :holder, 1, now(), now()) ON CONFLICT (name) DO UPDATE"
                    " SET holder = EXCLUDED.holder, epoch = evaluator_lease.epoch + 1,"
                    " acquired_at = now(), heartbeat_at = now() RETURNING epoch"
                ),
                {"name": name, "holder": holder},
            )
        ).scalar_one()
    )


async def heartbeat_lease(session: AsyncSession, name: str, holder: str) -> None:
    await session.execute(
        text(
            "UPDATE evaluator_lease SET heartbeat_at = now()"
            " WHERE name = :name AND holder = :holder"
        ),
        {"name": name, "holder": holder},
    )


async def get_lease(session: AsyncSession, name: str) -> dict[str, Any] | None:
    row = (
        await session.execute(
            text(
                "SELECT holder, epoch, acquired_at, heartbeat_at FROM evaluator_lease"
                " WHERE name = :name"
            ),
            {"name": name},
        )
    ).first()
    return None if row is None else dict(row._mapping)
