"""The start banner of `pulse worker`: what it talks to, what it evaluates, where it notifies.

At most 15 lines, no secret: a channel whose URL is its secret (a Slack webhook, an SMS API with a
token, a signed webhook) is named without its URL, and passwords inside URLs are masked.
"""

from __future__ import annotations

from pipeline import __version__
from pipeline.config.settings import ChannelsConfig, Config, shown_url
from pipeline.rules import RuleSet

MAX_LINES = 15


def channel_lines(channels: ChannelsConfig) -> list[str]:
    """One short description per configured channel (no secrets)."""
    out = []
    slack = channels.slack
    if slack.bot_token and slack.channel:
        out.append(f"slack (Web API, {slack.channel})")
    elif slack.webhook_url:
        out.append("slack (incoming webhook)")
    email = channels.email
    if email.smtp_host and email.to:
        out.append(
            f"email ({len(email.to)} recipient(s) via {email.smtp_host}:{email.smtp_port}, {email.tls})"
        )
    if channels.sms.url and channels.sms.to:
        out.append(f"sms ({len(channels.sms.to)} number(s))")
    if channels.webhook.url:
        signed = "signed" if channels.webhook.signing_secret else "unsigned"
        out.append(f"webhook ({signed})")
    if channels.pagerduty.routing_key:
        out.append(f"pagerduty ({shown_url(channels.pagerduty.url)})")
    if channels.alertmanager.url:
        out.append(f"alertmanager ({shown_url(channels.alertmanager.url)})")
    return out


def banner(config: Config, rules: RuleSet, pid: int) -> list[str]:
    """The lines of the start banner."""
    broker = shown_url(config.broker.url) + (" (embedded Tansu)" if config.broker.embedded else "")
    names = [rule.name for rule in rules.rules]
    shown = ", ".join(names[:4]) + (f", and {len(names) - 4} more" if len(names) > 4 else "")
    channels = channel_lines(config.channels) or ["none: alerts go to the alerts topic and the history only"]
    web = f"http://{config.web.host}:{config.web.port}/"
    lines = [
        f"o4o-pulse {__version__} worker, pid {pid}",
        f"  broker      {broker}",
        f"  web         {web}  (health /health, metrics /metrics, API /api/v1)",
        f"  rules       {len(names)} from {rules.source}: {shown}",
        f"  channels    {channels[0]}",
        *(f"              {line}" for line in channels[1:]),
        f"  partitions  {config.topics.partitions} per topic; the 'ready' line names this worker's share",
    ]
    return lines[:MAX_LINES]
