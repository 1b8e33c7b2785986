"""Ingest on every core: N worker processes, each a whole ingest (its own event loop,
producer and key cache) listening on the same port with SO_REUSEPORT, so the kernel spreads
connections over them. This process only supervises: it reserves the port, starts the
workers, restarts one that dies, and on SIGTERM/SIGINT passes the signal on and waits for
each worker's graceful shutdown (in-flight requests finish, the producer flushes).

Metrics stay one set for the service: the workers write them to files in a directory of
this run (prometheus-client's multiprocess mode), and `/metrics` on any worker sums them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

from shared.metrics import MULTIPROCESS_DIR_ENV
from shared.retry import backoff

log = logging.getLogger(__name__)

# A worker that dies is started again; one that keeps dying waits longer each time.
_RESTART_BASE_SECONDS = 0.5
_RESTART_CAP_SECONDS = 30.0
# A worker that ran this long before dying starts the backoff afresh.
_HEALTHY_SECONDS = 60.0


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    return len(os.sched_getaffinity(0))


def shared_port_socket(host: str, port: int) -> tuple[socket.socket, int]:
    """A socket bound to host:port that other processes may bind too (SO_REUSEPORT), and
    its port (port 0 becomes a concrete one). It is not listening yet: uvicorn's server
    listens once the app's startup is complete, so the kernel never queues a connection
    for a worker that cannot serve it. The supervisor keeps one that never listens, which
    reserves the port for the workers and receives no connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock, int(sock.getsockname()[1])


class Supervisor:
    """Starts `count` workers running `target(port)` (a module-level function, so a spawned
    process can import it), keeps them running, stops them."""

    def __init__(
        self, target: Callable[[int], None], count: int, *, port: int, stop_timeout: float
    ) -> None:
        self._target = target
        self._count = count
        self._port = port
        self._stop_timeout = stop_timeout
        self._context = multiprocessing.get_context("spawn")  # no inherited event loop
        self._workers: list[BaseProcess] = []
        self._started: list[float] = []
        self._failures: list[int] = []
        self._stopping = False

    def run(self) -> int:
        """Until a signal asks to stop; returns the exit code for the supervisor."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        for index in range(self._count):
            self._workers.append(self._start(index))
            self._started.append(time.monotonic())
            self._failures.append(0)
        log.info("ingest workers started", extra={"workers": self._count, "port": self._port})
        while not self._stopping:
            for index, worker in enumerate(self._workers):
                if worker.is_alive() or self._stopping:
                    continue
                self._replace(index, worker)
            time.sleep(0.2)
        return self._stop_all()

    def _start(self, index: int) -> BaseProcess:
        worker = self._context.Process(
            target=self._target, args=(self._port,), name=f"ingest-worker-{index}"
        )
        worker.start()
        return worker

    def _replace(self, index: int, dead: BaseProcess) -> None:
        _forget_metrics(dead.pid)
        lived = time.monotonic() - self._started[index]
        self._failures[index] = 1 if lived > _HEALTHY_SECONDS else self._failures[index] + 1
        wait = backoff(self._failures[index], base=_RESTART_BASE_SECONDS, cap=_RESTART_CAP_SECONDS)
        log.warning(
            "ingest worker exited; starting it again",
            extra={"worker": index, "exitcode": dead.exitcode, "retry_in": wait},
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not self._stopping:
            time.sleep(0.1)
        if not self._stopping:
            self._workers[index] = self._start(index)
            self._started[index] = time.monotonic()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _stop_all(self) -> int:
        for worker in self._workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        stuck = [w for w in self._workers if w.is_alive()]
        for worker in stuck:
            log.error("ingest worker did not stop in time; killing it", extra={"pid": worker.pid})
            worker.kill()
            worker.join()
        log.info("ingest workers stopped")
        return 1 if stuck else 0


def metrics_directory() -> str:
    """A fresh directory for this run's multiprocess metrics, named in the environment so
    that every worker (spawned later) writes there."""
    path = tempfile.mkdtemp(prefix="pacekeeper-ingest-metrics-")
    os.environ[MULTIPROCESS_DIR_ENV] = path
    return path


def remove_metrics_directory(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.environ.pop(MULTIPROCESS_DIR_ENV, None)


def _forget_metrics(pid: int | None) -> None:
    """A dead worker's live gauges (in-flight requests, broker up) no longer count."""
    if pid is not None and os.environ.get(MULTIPROCESS_DIR_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
