"""The alerts HTTP API: config CRUD, silences, alerts, goals, KPI series."""
