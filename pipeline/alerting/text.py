"""Escaping of event-derived text for each notification medium (Slack mrkdwn, HTML, SMS, one-line headers)."""

from __future__ import annotations

import html
import re

# C0/C1 controls except tab and newline, plus bidi overrides and line/paragraph separators, which can
# reorder or hide what a reader sees.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_MENTION = re.compile(r"@(here|channel|everyone)\b", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_ZWSP = "\u200b"
ELLIPSIS = "…"


def strip_control(text: str) -> str:
    """Remove control and bidi-override characters, keeping tabs and newlines."""
    return _CONTROL.sub("", text)


def slack_text(text: str) -> str:
    """Make text safe inside Slack mrkdwn: no mentions, links or special commands can be injected."""
    escaped = strip_control(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # Bare @here/@channel notify everyone when a message is posted with link_names; a zero-width
    # space after the @ keeps the word readable but inert.
    return _MENTION.sub(lambda m: f"@{_ZWSP}{m.group(1)}", escaped)


def html_text(text: str) -> str:
    """Escape text for HTML element content and attribute values."""
    return html.escape(strip_control(text), quote=True)


def one_line(text: str, max_chars: int | None = None) -> str:
    """Collapse text to one line without controls (mail headers, SMS), cut with an ellipsis."""
    flat = _SPACE.sub(" ", strip_control(text).replace("\t", " ")).strip()
    return clip(flat, max_chars) if max_chars is not None else flat


def sms_text(text: str, max_chars: int) -> str:
    """Plain SMS text: no control characters, whitespace collapsed, at most max_chars characters."""
    return one_line(text, max_chars)


def clip(text: str, max_chars: int) -> str:
    """Cut text to at most max_chars characters, ending with an ellipsis when cut."""
    if len(text) <= max_chars:
        return text
    if max_chars <= 0:
        return ""
    return text[: max_chars - 1].rstrip() + ELLIPSIS


def clip_escaped(text: str, max_chars: int) -> str:
    """Cut already-escaped text (HTML or Slack entities) without leaving half an entity behind."""
    if len(text) <= max_chars:
        return text
    cut = text[: max(max_chars - 1, 0)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut.rstrip() + ELLIPSIS
