"""The email channel against a real SMTP server (aiosmtpd on loopback): what arrives, and
how the server's replies map to retry or give up."""

from __future__ import annotations

import email
import socket
from collections.abc import Iterator
from email.message import Message
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from services.alerts.notify import text
from services.alerts.notify.base import NotifyError
from services.alerts.notify.email import EmailNotifier
from shared.config.alerting import ChannelSpec
from tests.alerts.test_notify import PAYLOAD

pytestmark = pytest.mark.integration


class Inbox:
    """An aiosmtpd handler: keeps what it accepts, or answers every DATA with `reply`."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], Message]] = []
        self.reply: str | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reply is not None:
            return self.reply
        self.received.append(
            (
                envelope.mail_from,
                list(envelope.rcpt_tos),
                email.message_from_bytes(envelope.content),
            )
        )
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def notifier(port: int) -> EmailNotifier:
    spec = ChannelSpec.model_validate(
        {
            "name": "mail",
            "type": "email",
            "to": ["ops@example.com", "oncall@example.com"],
            "sender": "pacekeeper@example.com",
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_starttls": False,  # aiosmtpd here has no certificate
        }
    )
    return EmailNotifier(spec, httpx.AsyncClient())


async def test_the_notification_arrives_with_its_subject_body_and_stable_message_id(
    smtp: tuple[Inbox, int],
) -> None:
    inbox, port = smtp
    await notifier(port).notify(PAYLOAD, key="delivery-41")
    assert len(inbox.received) == 1
    sender, recipients, message = inbox.received[0]
    assert sender == "pacekeeper@example.com"
    assert recipients == ["ops@example.com", "oncall@example.com"]
    assert message["Subject"] == text.title(PAYLOAD)
    assert message["Message-ID"] == "<delivery-41@pacekeeper>"  # a resend dedupes on it
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    assert "orders fell" in body.decode()


@pytest.mark.parametrize(
    ("reply", "retryable"),
    [("451 4.3.0 Mailbox busy, try later", True), ("550 5.1.1 No such user", False)],
)
async def test_transient_replies_are_retried_and_permanent_ones_are_not(
    smtp: tuple[Inbox, int], reply: str, retryable: bool
) -> None:
    inbox, port = smtp
    inbox.reply = reply
    with pytest.raises(NotifyError) as caught:
        await notifier(port).notify(PAYLOAD, key="k")
    assert caught.value.retryable is retryable
    assert reply.split()[0] in str(caught.value)


async def test_no_server_listening_is_retried() -> None:
    with pytest.raises(NotifyError) as caught:
        await notifier(_free_port()).notify(PAYLOAD, key="k")
    assert caught.value.retryable is True
