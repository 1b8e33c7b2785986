"""`pacekeeper run ingest`: settings, logging and uvicorn; nothing else.

One worker runs in this process. Several (`PACEKEEPER_INGEST_WORKERS`, by default one per
available core) run as child processes sharing the port, under `workers.Supervisor`.
Uvicorn owns each worker's signals: on SIGTERM/SIGINT it stops accepting, lets in-flight
requests finish (up to the shutdown timeout), then the lifespan flushes and closes the
producer.
"""

from __future__ import annotations

import logging
import os
import socket

import uvicorn

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from services.ingest.workers import (
    Supervisor,
    available_cores,
    metrics_directory,
    remove_metrics_directory,
    shared_port_socket,
)
from shared.http_server import HttpLimits, server_config
from shared.kafka_security import exit_unless_access
from shared.logging import configure_logging
from shared.runtime import tune_gc

log = logging.getLogger(__name__)
_BACKLOG = 2048


def main() -> None:
    settings = IngestSettings()
    configure_logging(settings.log_level, json=settings.log_json)
    exit_unless_access(settings)
    workers = settings.ingest_workers or available_cores()
    log.info(
        "ingest starting",
        extra={"host": settings.ingest_host, "port": settings.ingest_port, "workers": workers},
    )
    if workers == 1:
        serve(settings)
        return
    holder, port = shared_port_socket(settings.ingest_host, settings.ingest_port)
    metrics = metrics_directory()
    # The workers read their settings from the environment, as this process did.
    os.environ["PACEKEEPER_INGEST_PORT"] = str(port)
    os.environ["PACEKEEPER_INGEST_WORKERS"] = str(workers)
    try:
        # Past the workers' own shutdown timeout: they flush their producers last.
        stop_timeout = settings.ingest_shutdown_timeout + 10
        code = Supervisor(worker, workers, port=port, stop_timeout=stop_timeout).run()
    finally:
        holder.close()
        remove_metrics_directory(metrics)
    raise SystemExit(code)


def worker(port: int) -> None:
    """One of several workers, in a spawned process."""
    # Its own process group: a terminal's Ctrl-C reaches the supervisor alone, which then
    # stops every worker once (a second signal would make uvicorn skip the graceful part).
    os.setpgrp()
    settings = IngestSettings()
    configure_logging(settings.log_level, json=settings.log_json)
    sock, _ = shared_port_socket(settings.ingest_host, port)
    serve(settings, sock)


def serve(settings: IngestSettings, sock: socket.socket | None = None) -> None:
    config = server_config(
        create_app(settings),
        host=settings.ingest_host,
        port=settings.ingest_port,
        limits=HttpLimits.from_settings(settings),
        lifespan="on",
        timeout_graceful_shutdown=int(settings.ingest_shutdown_timeout),
        backlog=_BACKLOG,
        proxy_headers=False,  # nothing here uses the client address
    )
    tune_gc()
    uvicorn.Server(config).run(sockets=None if sock is None else [sock])


if __name__ == "__main__":
    main()
