"""Private Kafka brokers for the tests that need more than the shared one on 9092: a secured
broker (tests/security) and a three-node cluster (tests/chaos). They run the same Maven jars
as deploy/local/kafka.sh, each node a JVM of its own that a test may kill, pause or restart.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KAFKA_SH = REPO / "deploy" / "local" / "kafka.sh"
STATE = Path(os.environ.get("PACEKEEPER_STATE_DIR", REPO / ".local"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@functools.cache
def _fetch_jars() -> None:
    subprocess.run([str(KAFKA_SH), "fetch"], check=True, timeout=600, capture_output=True)


def java_command(logs: Path) -> list[str]:
    """The JVM with the broker's jars (fetched by kafka.sh once) and its log4j set-up."""
    _fetch_jars()
    return [
        "java",
        "-Xmx384m",
        "-Xms128m",
        "-XX:+UseG1GC",
        "-cp",
        str(STATE / "kafka" / "libs" / "*"),
        f"-Dkafka.logs.dir={logs}",
        f"-Dlog4j2.configurationFile={REPO / 'deploy/local/kafka/log4j2.properties'}",
    ]


def new_cluster_id(java: list[str]) -> str:
    return subprocess.run(
        [*java, "kafka.tools.StorageTool", "random-uuid"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()


class BrokerNode:
    """One KRaft node (broker and controller in one JVM) with its own directory."""

    def __init__(self, root: Path, properties: dict[str, str]) -> None:
        self.root = root
        self.logs = root / "logs"
        self.config = root / "server.properties"
        self.properties = {
            # The log cleaner allocates its dedupe buffer (128 MiB by default) in one piece at
            # start-up: half of this small heap, which a node sometimes could not find
            # (OutOfMemoryError, "Error starting LogManager"). Tests compact next to nothing.
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            **properties,
            "log.dirs": str(root / "data"),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    def format(self, cluster_id: str, *extra: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config.write_text("".join(f"{k}={v}\n" for k, v in self.properties.items()))
        java = java_command(self.logs)
        tool = [*java, "kafka.tools.StorageTool", "format", "--config", str(self.config)]
        subprocess.run(
            [*tool, "--cluster-id", cluster_id, *extra],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        """Launch the JVM; `wait_started` waits for it."""
        self._log_offset = self.server_log.stat().st_size if self.server_log.exists() else 0
        with (self.root / "kafka.out").open("ab") as out:
            self.process = subprocess.Popen(
                [*java_command(self.logs), "kafka.Kafka", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_started(self, timeout: float = 180.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.server_log.exists():
                with self.server_log.open("rb") as log:
                    log.seek(self._log_offset)
                    if b"Kafka Server started" in log.read():
                        return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"broker in {self.root} did not start:\n{self._failure()}")
            time.sleep(0.3)

    def _failure(self) -> str:
        """What the node said last: its console and the errors of its server.log (log4j
        writes only there, so a fatal fault never reaches the console)."""
        out = (self.root / "kafka.out").read_text(errors="replace")[-1000:]
        if not self.server_log.exists():
            return out
        with self.server_log.open("rb") as log:
            log.seek(self._log_offset)
            lines = log.read().decode(errors="replace").splitlines()
        errors = [i for i, line in enumerate(lines) if " ERROR " in line or " FATAL " in line]
        excerpt = lines[errors[0] : errors[0] + 15] if errors else lines[-15:]
        return out + "\n".join(excerpt)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the node loses whatever it had not written, as in a power cut."""
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=30)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if not self.alive:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)  # a paused JVM cannot handle SIGTERM
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
