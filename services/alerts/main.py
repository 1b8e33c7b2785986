"""`pacekeeper run alerts` / `python -m services.alerts.main`: wiring and signals only.

SIGINT/SIGTERM ask uvicorn to stop; the lifespan then cancels the worker (which closes the
lock connection, handing leadership to a standby) and closes the HTTP client and engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

import uvicorn

from services.alerts.app import create_app
from services.alerts.settings import AlertsSettings
from shared.http_server import HttpLimits, server_config
from shared.kafka_security import exit_unless_access
from shared.logging import configure_logging


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals are ours (see `serve`), not uvicorn's.
        yield


async def serve(settings: AlertsSettings) -> None:
    config = server_config(
        create_app(settings),
        host=settings.alerts_host,
        port=settings.alerts_port,
        limits=HttpLimits.from_settings(settings),
        lifespan="on",
        timeout_graceful_shutdown=int(settings.alerts_shutdown_timeout_seconds),
    )
    server = _Server(config)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        if server.should_exit:  # a second signal: stop waiting for connections
            server.force_exit = True
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    await server.serve()


def main() -> None:
    settings = AlertsSettings()
    configure_logging(settings.log_level, json=settings.log_json)
    exit_unless_access(settings)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
