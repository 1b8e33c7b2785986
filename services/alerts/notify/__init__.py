"""Notifiers, one module per channel type, all behind one small interface.

A notifier turns the stored notification payload (shaped like Alertmanager's webhook body)
into its channel's request and raises `NotifyError` saying whether a retry can help, as
Alertmanager's notifiers return `(retry bool, err)`. What people read (chat, email) is in
the alerts service's locale; what machines read (webhook, Alertmanager) is the same in all.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from services.alerts.notify.base import Notifier, NotifyError
from shared.config.alerting import ChannelSpec, ChannelType
from shared.i18n import Locale


def notifier_for(
    channel: ChannelSpec, http: httpx.AsyncClient, locale: Locale = Locale.en
) -> Notifier:
    """The notifier of `channel`'s type; the texts people read (chat, email) in `locale`."""
    from services.alerts.notify import (
        alertmanager,
        dingtalk,
        email,
        feishu,
        slack,
        webhook,
        wecom,
    )

    factories: dict[ChannelType, Callable[[ChannelSpec, httpx.AsyncClient, Locale], Notifier]] = {
        ChannelType.webhook: webhook.WebhookNotifier,
        ChannelType.slack: slack.SlackNotifier,
        ChannelType.email: email.EmailNotifier,
        ChannelType.alertmanager: alertmanager.AlertmanagerNotifier,
        ChannelType.feishu: feishu.FeishuNotifier,
        ChannelType.dingtalk: dingtalk.DingTalkNotifier,
        ChannelType.wecom: wecom.WeComNotifier,
    }
    return factories[channel.type](channel, http, locale)


__all__ = ["Notifier", "NotifyError", "notifier_for"]
