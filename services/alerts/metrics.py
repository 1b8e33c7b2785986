"""Prometheus metrics of the alerts service (one set per process, in the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS

EVALUATIONS = Counter(
    "pacekeeper_alerts_evaluations_total",
    "Evaluation cycles, by trigger (tick, update, dispatch)",
    ["trigger"],
)
EVALUATION_SECONDS = Histogram(
    "pacekeeper_alerts_evaluation_duration_seconds",
    "Time of one evaluation cycle, by trigger",
    ["trigger"],
    buckets=LATENCY_BUCKETS,
)
RULES_EVALUATED = Counter(
    "pacekeeper_alerts_rule_instances_evaluated_total", "Rule instances (rule x group) judged"
)
ALERTS = Gauge("pacekeeper_alerts_alerts", "Alerts by state", ["state"])
GOALS = Gauge("pacekeeper_alerts_goals", "Goals by status", ["status"])
NOTIFICATIONS_SENT = Counter(
    "pacekeeper_alerts_notifications_sent_total", "Notifications delivered", ["channel"]
)
NOTIFICATIONS_FAILED = Counter(
    "pacekeeper_alerts_notifications_failed_total",
    "Failed delivery attempts, by channel and whether they will be retried",
    ["channel", "retryable"],
)
DELIVERY_SECONDS = Histogram(
    "pacekeeper_alerts_delivery_duration_seconds",
    "Time of one delivery attempt",
    ["channel"],
    buckets=LATENCY_BUCKETS,
)
QUEUE_DEPTH = Gauge("pacekeeper_alerts_delivery_queue_depth", "Notifications waiting for delivery")
LEADER = Gauge("pacekeeper_alerts_leader", "1 while this instance is the active evaluator")
GOAL_READINGS_FAILED = Counter(
    "pacekeeper_alerts_goal_readings_failed_total",
    "Evaluations whose goal readings for dashboards could not be stored (alerting went on)",
)
GOAL_RESULTS_FAILED = Counter(
    "pacekeeper_alerts_goal_results_failed_total",
    "Evaluations whose closed goal periods could not be recorded or restated (alerting went on)",
)
GOAL_RESTATEMENTS = Counter(
    "pacekeeper_alerts_goal_restatements_total",
    "Closed goal periods changed by late events, by outcome (notified or only recorded)",
    ["outcome"],
)
