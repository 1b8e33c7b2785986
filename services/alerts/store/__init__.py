"""All SQL of the alerts service, one module per table family. Each function runs in the
caller's transaction and does not commit, except `lease.try_lock`, which commits so that the
lock connection holds nothing but the lock. Statements are named module constants; rows come
back as dataclasses (KPI values and series as plain numbers and pairs).

KPIs are read only through the aggregator's `kpi_value` / `kpi_series`, the one definition
of KPI math (`kpis.py`); its single exception lists the dimension values present in a
window, since the functions compute values and do not enumerate groups.
"""

from services.alerts.store import alerts, config, goals, groups, kpis, lease, outbox, silences

__all__ = ["alerts", "config", "goals", "groups", "kpis", "lease", "outbox", "silences"]
