"""A private Kafka broker that demands TLS: a SASL_SSL listener (SCRAM-SHA-512 users made at
format time) and an SSL listener that requires a client certificate (tests/brokers.py runs
it); certificates made here, by a throw-away CA."""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from tests.brokers import BrokerNode, free_port, java_command, new_cluster_id

USER = "pacekeeper"
PASSWORD = "scram-" + uuid.uuid4().hex[:12]
KEYSTORE_PASSWORD = "keystore-" + uuid.uuid4().hex[:12]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(
        self, name: str, *, server: bool
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=2))
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return key, builder.sign(self.key, hashes.SHA256())

    def write_pem(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path


@dataclass(frozen=True)
class ClientFiles:
    cafile: Path
    certfile: Path
    keyfile: Path
    untrusted_cafile: Path  # a CA that signed nothing the broker presents


class SecureBroker:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sasl_port, self.ssl_port = free_port(), free_port()
        self.internal_port, self.controller_port = free_port(), free_port()
        self.node: BrokerNode | None = None

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    def _certificates(self) -> ClientFiles:
        tls = self.root / "tls"
        tls.mkdir(parents=True)
        authority = Authority.create("pacekeeper test CA")
        server_key, server_cert = authority.issue("127.0.0.1", server=True)
        (tls / "broker.p12").write_bytes(
            pkcs12.serialize_key_and_certificates(
                b"broker",
                server_key,
                server_cert,
                [authority.cert],
                serialization.BestAvailableEncryption(KEYSTORE_PASSWORD.encode()),
            )
        )
        client_key, client_cert = authority.issue("pacekeeper-client", server=False)
        certfile = tls / "client.pem"
        certfile.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
        keyfile = tls / "client-key.pem"
        keyfile.write_bytes(
            client_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return ClientFiles(
            cafile=authority.write_pem(tls / "ca.pem"),
            certfile=certfile,
            keyfile=keyfile,
            untrusted_cafile=Authority.create("someone else").write_pem(tls / "other-ca.pem"),
        )

    def _properties(self, files: ClientFiles) -> dict[str, str]:
        listeners = {
            "INTERNAL": self.internal_port,
            "SASL_SSL": self.sasl_port,
            "SSL": self.ssl_port,
        }
        advertised = ",".join(f"{name}://127.0.0.1:{port}" for name, port in listeners.items())
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": f"{advertised},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": advertised,
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": (
                "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL"
            ),
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "listener.name.ssl.ssl.client.auth": "required",
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.root / "tls" / "broker.p12"),
            "ssl.keystore.password": KEYSTORE_PASSWORD,
            "ssl.key.password": KEYSTORE_PASSWORD,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(files.cafile),
            "num.partitions": "3",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }

    def start(self) -> ClientFiles:
        files = self._certificates()
        self.node = BrokerNode(self.root / "node", self._properties(files))
        scram_user = f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]"
        self.node.format(new_cluster_id(java_command(self.root)), "--add-scram", scram_user)
        self.node.start()
        self.node.wait_started()
        return files

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()
