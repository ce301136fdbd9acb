"""Event-derived text cannot inject mentions, links, markup or control characters into notifications."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.alerting.text import ELLIPSIS, clip, clip_escaped, html_text, one_line, slack_text, sms_text

SLACK_INJECTIONS = [
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<@U123ABC>",
    "<#C024BE7LR>",
    "<!subteam^S123>",
    "<http://evil.example|click here>",
    "<mailto:a@b.c|mail>",
]


@pytest.mark.parametrize("attack", SLACK_INJECTIONS)
def test_slack_special_syntax_is_escaped(attack: str) -> None:
    out = slack_text(f"disk full {attack} now")
    assert "<" not in out and ">" not in out
    assert out == f"disk full {attack} now".replace("<", "&lt;").replace(">", "&gt;")


@pytest.mark.parametrize("word", ["@here", "@channel", "@everyone", "@HERE"])
def test_slack_bare_broadcast_mentions_are_neutralised(word: str) -> None:
    out = slack_text(f"ping {word}!")
    assert word not in out
    assert out == f"ping @\u200b{word[1:]}!"


def test_slack_ampersand_is_escaped_first() -> None:
    assert slack_text("a & b &lt; c") == "a &amp; b &amp;lt; c"


def test_slack_strips_control_and_bidi_characters_but_keeps_newlines() -> None:
    assert slack_text("a\x00b\x1b[31mc\u202ed\r\ne\tf") == "ab[31mcd\ne\tf"


def test_slack_leaves_ordinary_text_alone() -> None:
    assert slack_text("p99 latency 1.2s > 1s on /api/orders (5% errors)") == (
        "p99 latency 1.2s &gt; 1s on /api/orders (5% errors)"
    )
    assert (
        slack_text("mail ops@example.com, route /orders/{id}") == "mail ops@example.com, route /orders/{id}"
    )


@given(st.text())
def test_slack_output_has_no_angle_brackets_or_broadcasts(text: str) -> None:
    out = slack_text(text)
    assert "<" not in out and ">" not in out
    assert not re.search(r"@(here|channel|everyone)\b", out, re.IGNORECASE)
    # Every ampersand starts one of the three entities Slack knows.
    assert re.fullmatch(r"([^&]|&amp;|&lt;|&gt;)*", out, re.DOTALL)


@pytest.mark.parametrize(
    ("attack", "expected"),
    [
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ('" onmouseover="x', "&quot; onmouseover=&quot;x"),
        ("' autofocus='", "&#x27; autofocus=&#x27;"),
        ("Tom & Jerry", "Tom &amp; Jerry"),
        ("a\x00b", "ab"),
    ],
)
def test_html_text_escapes_markup_and_quotes(attack: str, expected: str) -> None:
    assert html_text(attack) == expected


@given(st.text())
def test_html_output_cannot_open_tags_or_break_attributes(text: str) -> None:
    out = html_text(text)
    assert not set(out) & set("<>\"'")


def test_sms_text_is_one_plain_line() -> None:
    assert sms_text("  CPU\n\n high\x07\t on <b>db1</b>  ", 70) == "CPU high on <b>db1</b>"


def test_sms_text_is_cut_with_an_ellipsis() -> None:
    out = sms_text("x" * 100, 70)
    assert len(out) == 70 and out.endswith(ELLIPSIS)


@given(st.text(), st.integers(min_value=1, max_value=400))
def test_sms_text_respects_the_limit_and_has_no_controls(text: str, limit: int) -> None:
    out = sms_text(text, limit)
    assert len(out) <= limit
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", out)
    assert "  " not in out


def test_one_line_removes_header_injection() -> None:
    assert one_line("subject\r\nBcc: victim@example.com") == "subject Bcc: victim@example.com"


def test_clip_keeps_short_text() -> None:
    assert clip("short", 10) == "short"
    assert clip("longer text", 6) == "longe" + ELLIPSIS


def test_clip_escaped_never_leaves_half_an_entity() -> None:
    escaped = slack_text("abc<def")  # abc&lt;def
    assert clip_escaped(escaped, 6) == "abc" + ELLIPSIS
    assert clip_escaped(escaped, 8) == "abc&lt;" + ELLIPSIS
