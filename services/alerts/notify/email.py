"""Email over SMTP (aiosmtplib): one message per notification, Message-ID from the key."""

from __future__ import annotations

from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib
import httpx

from services.alerts.notify import text
from services.alerts.notify.base import NotifyError
from shared.config.alerting import ChannelSpec
from shared.i18n import Locale


def message(
    channel: ChannelSpec, payload: Mapping[str, Any], key: str, locale: Locale = Locale.en
) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = text.title(payload, locale)
    msg["From"] = channel.sender or f"pacekeeper@{channel.smtp_host}"
    msg["To"] = ", ".join(channel.to)
    msg["Date"] = formatdate(localtime=False)
    # A stable Message-ID lets mail systems drop the duplicate a crash-resend can cause.
    msg["Message-ID"] = f"<{key}@pacekeeper>"
    msg.set_content(text.body(payload, locale=locale))
    return msg


class EmailNotifier:
    def __init__(
        self, channel: ChannelSpec, http: httpx.AsyncClient, locale: Locale = Locale.en
    ) -> None:
        self.channel = channel
        self._locale = locale

    async def notify(self, payload: Mapping[str, Any], *, key: str) -> None:
        channel = self.channel
        assert channel.smtp_host is not None
        try:
            await aiosmtplib.send(
                message(channel, payload, key, self._locale),
                hostname=channel.smtp_host,
                port=channel.smtp_port,
                username=channel.smtp_username,
                password=(
                    channel.smtp_password.get_secret_value() if channel.smtp_password else None
                ),
                start_tls=channel.smtp_starttls,
                timeout=10,
            )
        except aiosmtplib.SMTPResponseException as exc:
            # 4xx replies are transient by definition (RFC 5321); 5xx are permanent.
            raise NotifyError(
                f"SMTP {exc.code}: {exc.message}", retryable=400 <= exc.code < 500
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"{type(exc).__name__}: {exc}", retryable=True) from exc
