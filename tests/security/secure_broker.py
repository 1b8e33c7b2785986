"""A private Kafka broker that demands TLS: a SASL_SSL listener (SCRAM-SHA-512 users made at
format time) and an SSL listener that requires a client certificate. Same Maven jars as
deploy/local/kafka.sh; certificates made here, by a throw-away CA."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "deploy" / "local" / "kafka.sh"
USER = "pacekeeper"
PASSWORD = "scram-" + uuid.uuid4().hex[:12]
KEYSTORE_PASSWORD = "keystore-" + uuid.uuid4().hex[:12]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        self.sasl_port, self.ssl_port = _free_port(), _free_port()
        self.internal_port, self.controller_port = _free_port(), _free_port()
        self.process: subprocess.Popen[bytes] | None = None

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

    def _config(self, files: ClientFiles) -> Path:
        listeners = {
            "INTERNAL": self.internal_port,
            "SASL_SSL": self.sasl_port,
            "SSL": self.ssl_port,
        }
        advertised = ",".join(f"{name}://127.0.0.1:{port}" for name, port in listeners.items())
        config = self.root / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    "controller.listener.names=CONTROLLER",
                    f"listeners={advertised},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners={advertised}",
                    "inter.broker.listener.name=INTERNAL",
                    "listener.security.protocol.map="
                    "CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL",
                    "sasl.enabled.mechanisms=SCRAM-SHA-512",
                    "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                    "listener.name.ssl.ssl.client.auth=required",
                    "ssl.keystore.type=PKCS12",
                    f"ssl.keystore.location={self.root / 'tls' / 'broker.p12'}",
                    f"ssl.keystore.password={KEYSTORE_PASSWORD}",
                    f"ssl.key.password={KEYSTORE_PASSWORD}",
                    "ssl.truststore.type=PEM",
                    f"ssl.truststore.location={files.cafile}",
                    f"log.dirs={self.root / 'data'}",
                    "num.partitions=3",
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                ]
            )
            + "\n"
        )
        return config

    def start(self, timeout: float = 180.0) -> ClientFiles:
        state = Path(os.environ.get("PACEKEEPER_STATE_DIR", REPO / ".local"))
        subprocess.run([str(KAFKA_SH), "fetch"], check=True, timeout=600, capture_output=True)
        files = self._certificates()
        config = self._config(files)
        java = ["java", "-Xmx256m", "-Xms128m", "-cp", str(state / "kafka" / "libs" / "*")]
        java += [f"-Dkafka.logs.dir={self.root / 'logs'}"]
        java += [f"-Dlog4j2.configurationFile={REPO / 'deploy/local/kafka/log4j2.properties'}"]
        cluster = subprocess.run(
            [*java, "kafka.tools.StorageTool", "random-uuid"],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.strip()
        subprocess.run(
            [
                *java,
                "kafka.tools.StorageTool",
                "format",
                "--config",
                str(config),
                "--cluster-id",
                cluster,
                "--add-scram",
                f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with (self.root / "kafka.out").open("ab") as out:
            self.process = subprocess.Popen(
                [*java, "kafka.Kafka", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        server_log = self.root / "logs" / "server.log"
        while not (server_log.exists() and "Kafka Server started" in server_log.read_text()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.root / "kafka.out").read_text()[-2000:]
                raise RuntimeError(f"the secured broker did not start:\n{tail}")
            time.sleep(0.5)
        return files

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
