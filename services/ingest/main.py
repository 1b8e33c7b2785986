"""`pacekeeper run ingest`: settings, logging and uvicorn; nothing else.

Uvicorn owns the signals: on SIGTERM/SIGINT it stops accepting, lets in-flight requests
finish (up to the shutdown timeout), then the lifespan flushes and closes the producer.
"""

from __future__ import annotations

import logging

import uvicorn

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.http_server import HttpLimits, server_config
from shared.logging import configure_logging
from shared.runtime import tune_gc


def main() -> None:
    settings = IngestSettings()
    configure_logging(settings.log_level, json=settings.log_json)
    logging.getLogger(__name__).info(
        "ingest starting",
        extra={"host": settings.ingest_host, "port": settings.ingest_port},
    )
    config = server_config(
        create_app(settings),
        host=settings.ingest_host,
        port=settings.ingest_port,
        limits=HttpLimits.from_settings(settings),
        lifespan="on",
        timeout_graceful_shutdown=int(settings.ingest_shutdown_timeout),
        backlog=2048,
        proxy_headers=False,  # nothing here uses the client address
    )
    tune_gc()
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
