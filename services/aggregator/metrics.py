"""The aggregator's Prometheus metrics (served on :8081/metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS

BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000)

consumer_lag = Gauge(
    "pacekeeper_aggregator_consumer_lag",
    "Messages between the committed position and the partition's high watermark",
    ["topic", "partition"],
)
batch_size = Histogram(
    "pacekeeper_aggregator_batch_size", "Kafka records per batch", buckets=BATCH_BUCKETS
)
commit_seconds = Histogram(
    "pacekeeper_aggregator_commit_seconds",
    "Time to write and commit one batch's transaction",
    buckets=LATENCY_BUCKETS,
)
events_applied = Counter(
    "pacekeeper_aggregator_events_applied_total", "Events stored and applied to KPI state"
)
duplicates_dropped = Counter(
    "pacekeeper_aggregator_duplicates_dropped_total",
    "Events dropped because their (source, id) was already stored",
)
late_events = Counter(
    "pacekeeper_aggregator_late_events_total",
    "Events behind their partition's watermark, applied to older minutes",
)
too_late_events = Counter(
    "pacekeeper_aggregator_too_late_events_total",
    "Events older than the allowed lateness, refused and sent to the DLQ",
)
dlq_messages = Counter(
    "pacekeeper_aggregator_dlq_messages_total", "Messages sent to the DLQ", ["reason"]
)
cardinality_folds = Counter(
    "pacekeeper_aggregator_cardinality_folds_total",
    "Events whose dimension value was folded into __other__",
    ["kpi", "dimension"],
)
db_retries = Counter(
    "pacekeeper_aggregator_db_retries_total", "Batch transactions retried after a database error"
)
definitions_loaded = Gauge(
    "pacekeeper_aggregator_kpi_definitions", "KPI definitions the aggregator currently applies"
)
watermark_seconds = Gauge(
    "pacekeeper_aggregator_watermark_seconds",
    "Per partition: epoch seconds before which minutes are complete",
    ["topic", "partition"],
)
kpi_updates_published = Counter(
    "pacekeeper_aggregator_kpi_updates_published_total",
    "Messages on kpi-updates acknowledged by the broker (one per KPI and relay round)",
)
kpi_update_relay_failures = Counter(
    "pacekeeper_aggregator_kpi_update_relay_failures_total",
    "Relay rounds that could not send the queued kpi-updates (they stay queued and are retried)",
)
