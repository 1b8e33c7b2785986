"""Notification texts in zh-CN: every channel family people read (Slack, email, Feishu,
DingTalk, WeCom), and the machine-readable ones unchanged by the locale."""

# ruff: noqa: RUF001 - Chinese text is written with full-width punctuation

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from services.alerts.notify import (
    alertmanager,
    dingtalk,
    email,
    feishu,
    notifier_for,
    slack,
    text,
    wecom,
)
from shared.config.alerting import ChannelSpec
from shared.i18n import Locale
from tests.alerts.test_notify import PAYLOAD, channel

pytestmark = pytest.mark.unit

ZH = Locale.zh_CN
GOAL_LINE = "目标 g：有风险，当前值 1，应达值 2，目标值 3，预计 2"


def test_title_and_body_in_chinese() -> None:
    assert text.title(PAYLOAD, ZH) == "[告警中:1 已恢复:1] orders-drop"
    body = text.body(PAYLOAD, locale=ZH)
    assert "- 告警中 orders fell （当前值 3） source=web" in body
    assert GOAL_LINE in body
    assert "落后最多：{'source': 'web'} (-4)" in body
    assert "- 已恢复 orders-drop" in body
    assert "FIRING" not in body
    assert "value" not in body


def test_numbers_in_the_locale_format() -> None:
    big = {**PAYLOAD, "alerts": [{**PAYLOAD["alerts"][0], "value": 1234567.891}]}
    assert "（当前值 1,234,570）" in text.body(big, locale=ZH)  # six significant digits
    assert "(value 1,234,570)" in text.body(big)


def test_each_chat_family_in_chinese() -> None:
    message = slack.message(PAYLOAD, ZH)
    assert message["text"] == "[告警中:1 已恢复:1] orders-drop"
    assert "**告警中** orders fell" in message["attachments"][0]["text"]
    ding = dingtalk.message(PAYLOAD, ZH)["markdown"]
    assert ding["title"] == "[告警中:1 已恢复:1] orders-drop"
    assert ding["text"].startswith("### [告警中:1 已恢复:1] orders-drop\n- **告警中** orders fell")
    lark = feishu.message(PAYLOAD, None, 1700000000, ZH)["content"]["text"]
    assert lark.startswith("[告警中:1 已恢复:1] orders-drop\n- 告警中 orders fell")
    assert GOAL_LINE in lark
    work = wecom.message(PAYLOAD, ZH)["markdown"]["content"]
    assert work.startswith("**[告警中:1 已恢复:1] orders-drop**\n- **告警中** orders fell")
    spec = ChannelSpec.model_validate(
        {"name": "mail", "type": "email", "to": ["ops@example.com"], "smtp_host": "smtp.local"}
    )
    mail = email.message(spec, PAYLOAD, "k1", ZH)
    assert mail["Subject"] == "[告警中:1 已恢复:1] orders-drop"
    assert GOAL_LINE in mail.get_content()


def test_english_stays_as_it_was() -> None:
    assert slack.message(PAYLOAD)["text"] == "[FIRING:1 RESOLVED:1] orders-drop"
    body = text.body(PAYLOAD)
    assert "- FIRING orders fell (value 3) source=web" in body
    assert "goal g: at risk, value 1, expected 2, target 3, projection 2" in body


def test_machine_readable_bodies_do_not_depend_on_the_locale() -> None:
    now = datetime(2027, 1, 1, tzinfo=UTC)
    spec = channel(type="alertmanager")
    assert alertmanager.alerts(spec, PAYLOAD, now)[0]["annotations"]["value"] == "3"


async def test_notifier_for_passes_the_locale_on() -> None:
    async with httpx.AsyncClient() as http:
        notifier = notifier_for(channel(type="slack"), http, ZH)
        assert isinstance(notifier, slack.SlackNotifier)
        assert notifier._locale is ZH
