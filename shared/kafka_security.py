"""How Pacekeeper's Kafka clients prove who they are, and the start-up check that says so
plainly when the broker refuses them.

`PACEKEEPER_KAFKA_SECURITY_PROTOCOL` is PLAINTEXT (local development), SSL (TLS, with a
client certificate when the broker requires one) or SASL_SSL (TLS plus a SCRAM or PLAIN
user). Every producer, consumer and admin client gets the same options (shared.kafka).

aiokafka retries a refused connection like an unreachable broker and finally says only
"Unable to bootstrap". A wrong password or an untrusted certificate never heals by
waiting, so every service checks once before it starts and exits with one line naming
the cause.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from shared.settings import BaseServiceSettings

log = logging.getLogger(__name__)

EXIT_ACCESS_REFUSED = 2


class KafkaAccessError(RuntimeError):
    """The broker answered and refused us: credentials, certificate or mechanism."""


def client_security(settings: BaseServiceSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for the configured protocol ({} for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    key_password = settings.kafka_ssl_key_password
    context = create_ssl_context(
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
        password=key_password.get_secret_value() if key_password else None,
    )
    options: dict[str, Any] = {"security_protocol": protocol, "ssl_context": context}
    if protocol == "SASL_SSL":
        password = settings.kafka_sasl_password
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": password.get_secret_value() if password else None,
        }
    return options


def _refusal(settings: BaseServiceSettings, where: str, exc: BaseException) -> str | None:
    """One line naming why the broker at `where` refused us, or None if it did not. A TLS
    alert after the handshake (no client certificate) comes wrapped in the closed
    connection's error."""
    cause = exc.__cause__
    if cause is not None and isinstance(cause, ssl.SSLError):
        exc = cause
    if isinstance(exc, SaslAuthenticationFailed):
        return (
            f"Kafka at {where} refused SASL {settings.kafka_sasl_mechanism} authentication"
            f" of user {settings.kafka_sasl_username!r}: wrong user name or password"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"Kafka at {where} does not offer SASL {settings.kafka_sasl_mechanism}: {exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"Kafka at {where} presented a certificate this client does not trust"
            f" ({exc.verify_message}); PACEKEEPER_KAFKA_SSL_CAFILE must name the CA that"
            " signed it"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS with Kafka at {where} failed ({exc.reason or exc}); if the broker requires"
            " a client certificate, set PACEKEEPER_KAFKA_SSL_CERTFILE and"
            " PACEKEEPER_KAFKA_SSL_KEYFILE to one signed by a CA it trusts"
        )
    return None


async def check_access(settings: BaseServiceSettings, *, within: float = 10.0) -> bool:
    """Connect to the bootstrap servers once with the configured security.

    True as soon as one accepts us; False if none answered (a broker that is down is the
    services' ordinary business: they wait or answer 503). KafkaAccessError if a broker
    answered and refused us."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return True  # nothing to refuse; an unreachable broker shows up as it always did
    options = client_security(settings)
    for host, port, _family in collect_hosts(settings.kafka_bootstrap, randomize=False):
        where = f"{host}:{port}"
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host,
                    port,
                    client_id="pacekeeper-access-check",
                    request_timeout_ms=int(within * 1000),
                    **options,
                ),
                within,
            )
        except (OSError, KafkaError, TimeoutError) as exc:
            refusal = _refusal(settings, where, exc)
            if refusal is not None:
                raise KafkaAccessError(refusal) from exc
            log.warning("kafka not reachable", extra={"broker": where, "error": str(exc)})
            continue
        conn.close()
        return True
    return False


def exit_unless_access(settings: BaseServiceSettings) -> None:
    """Before a service starts: exit 2 with one line if the broker refuses its identity."""
    try:
        asyncio.run(check_access(settings))
    except KafkaAccessError as exc:
        log.critical("%s", exc)
        raise SystemExit(EXIT_ACCESS_REFUSED) from None
