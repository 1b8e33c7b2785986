"""The Pacekeeper services: ingest, aggregator and alerts, plus the `pacekeeper` CLI."""
