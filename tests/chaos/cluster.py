"""A three-node KRaft cluster on loopback (each node broker and controller, a quorum of
three), for tests that kill, pause and restart brokers. Replication as in production:
topics with 3 replicas and min.insync.replicas=2."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from tests.brokers import BrokerNode, free_port, java_command, new_cluster_id

REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2


class KafkaCluster:
    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = root
        ports = {node: (free_port(), free_port()) for node in range(1, size + 1)}
        voters = ",".join(f"{n}@127.0.0.1:{controller}" for n, (_, controller) in ports.items())
        self.ports = {node: broker for node, (broker, _) in ports.items()}
        self.nodes = {
            node: BrokerNode(
                root / f"node{node}",
                {
                    "process.roles": "broker,controller",
                    "node.id": str(node),
                    "controller.quorum.voters": voters,
                    "controller.listener.names": "CONTROLLER",
                    "listeners": (
                        f"PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}"
                    ),
                    "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker}",
                    "inter.broker.listener.name": "PLAINTEXT",
                    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    "num.partitions": "3",
                    "default.replication.factor": str(REPLICATION_FACTOR),
                    "min.insync.replicas": str(MIN_INSYNC_REPLICAS),
                    "offsets.topic.replication.factor": str(REPLICATION_FACTOR),
                    "transaction.state.log.replication.factor": str(REPLICATION_FACTOR),
                    "transaction.state.log.min.isr": str(MIN_INSYNC_REPLICAS),
                    "unclean.leader.election.enable": "false",
                    "group.initial.rebalance.delay.ms": "0",
                    # A dead broker is fenced after 6 s instead of 9: shorter tests.
                    "broker.session.timeout.ms": "6000",
                    "broker.heartbeat.interval.ms": "1000",
                },
            )
            for node, (broker, controller) in ports.items()
        }

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports.values())

    def start(self) -> None:
        cluster_id = new_cluster_id(java_command(self.root))
        for node in self.nodes.values():
            node.format(cluster_id)
        try:
            for node in self.nodes.values():
                node.start()
            for node in self.nodes.values():
                node.wait_started()
        except BaseException:
            self.stop()  # the nodes that did start would outlive the test run
            raise

    def restart(self, *ids: int) -> None:
        for node in ids:
            self.nodes[node].start()
        for node in ids:
            self.nodes[node].wait_started()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def alive(self) -> list[int]:
        return [node for node, broker in self.nodes.items() if broker.alive]

    def _alive_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.ports[node]}" for node in self.alive())

    async def partitions(self, topic: str) -> list[dict[str, Any]]:
        """The topic's partitions as the brokers describe them (leader, replicas, ISR)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self._alive_bootstrap())
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return sorted(described["partitions"], key=lambda p: p["partition"])

    async def leader(self, topic: str, partition: int) -> int:
        return int((await self.partitions(topic))[partition]["leader"])

    def active_controller(self) -> int:
        """The quorum's leader, as `kafka-metadata-quorum describe --status` reports it."""
        status = subprocess.run(
            [
                *java_command(self.root / "tools"),
                "org.apache.kafka.tools.MetadataQuorumCommand",
                "--bootstrap-server",
                self._alive_bootstrap(),
                "describe",
                "--status",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        found = re.search(r"LeaderId:\s*(\d+)", status)
        assert found, status
        return int(found.group(1))
