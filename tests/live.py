"""A real uvicorn server in a thread, as the services run it (guarded httptools on uvloop)."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from shared.http_server import HttpLimits, server_config


class LiveServer:
    """`app` served on an ephemeral loopback port, in a thread with its own loop, so async
    tests and blocking clients (Segment's, schemathesis, urllib) can all call it."""

    def __init__(self, app: Any, limits: HttpLimits | None = None) -> None:
        config = server_config(
            app, host="127.0.0.1", port=0, limits=limits or HttpLimits(), lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="live-server", daemon=True)

    def start(self, timeout: float = 60.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
