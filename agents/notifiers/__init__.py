"""Notification channels behind one interface (`agents.notifiers.base`); `notifiers(config)` builds the
configured ones."""

from __future__ import annotations

from agents.notifiers.alertmanager import AlertmanagerNotifier
from agents.notifiers.base import Notifier
from agents.notifiers.email import EmailNotifier
from agents.notifiers.pagerduty import PagerDutyNotifier
from agents.notifiers.slack import SlackNotifier
from agents.notifiers.sms import SmsNotifier
from agents.notifiers.webhook import WebhookNotifier
from pipeline.config.settings import ChannelsConfig

CHANNELS: tuple[type[Notifier], ...] = (
    SlackNotifier,
    EmailNotifier,
    SmsNotifier,
    WebhookNotifier,
    PagerDutyNotifier,
    AlertmanagerNotifier,
)


def notifiers(config: ChannelsConfig) -> dict[str, Notifier]:
    """Channel name -> notifier, for every channel the config enables."""
    return {cls.channel: cls(config) for cls in CHANNELS if cls.configured(config)}


__all__ = ["CHANNELS", "notifiers"]
