"""Tracking without a server: tokens and their HMAC, which links are rewritten, safe targets, verdicts."""

from __future__ import annotations

import datetime as dt

from flows import richtext, tracking
from models.secrets import SecretBox
from tests.conftest import TEST_KEY

OTHER_KEY = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycHk="
SENT = dt.datetime(2026, 11, 30, 10, 0)


def test_tokens_are_random_with_an_hmac_that_survives_key_rotation() -> None:
    box = SecretBox([TEST_KEY])
    token = tracking.new_token(box)
    assert token != tracking.new_token(box) and tracking.token_valid(box, token)
    body, mac = token.split(".")
    assert not tracking.token_valid(box, body + "." + mac[::-1])
    assert not tracking.token_valid(box, body[::-1] + "." + mac)
    assert not tracking.token_valid(SecretBox([OTHER_KEY]), token)
    assert tracking.token_valid(SecretBox([OTHER_KEY, TEST_KEY]), token)  # a new key in front: old mail still counts


def test_only_http_links_whose_text_is_not_a_url_are_rewritten() -> None:
    html = richtext.to_html(
        {
            "type": "rich_text",
            "elements": [
                {
                    "type": "rich_text_section",
                    "elements": [
                        {"type": "link", "url": "https://a.test/x?y=1&z=2", "text": "read"},
                        {"type": "link", "url": "mailto:a@b.test", "text": "mail"},
                        {"type": "link", "url": "tel:+1", "text": "call"},
                        {"type": "link", "url": "#top", "text": "top"},
                        {"type": "link", "url": "https://b.test/", "text": "https://b.test/"},
                        {"type": "link", "url": "http://c.test/", "text": "www.c.test"},
                        {"type": "link", "url": "javascript:alert(1)", "text": "x"},
                        {"type": "link", "url": "https://a.test/x?y=1&z=2", "text": "again"},
                    ],
                }
            ],
        }
    )
    links = tracking.trackable_links(html)
    assert links == ["https://a.test/x?y=1&z=2"]
    out = tracking.tracked_html(html, base_url="https://app.test/", token="T", links=links, pixel=False)
    assert out.count('href="https://app.test/t/c/T/0"') == 2
    for kept in ("mailto:a@b.test", "tel:+1", "#top", "https://b.test/", "http://c.test/"):
        assert f'href="{kept}"' in out
    assert "<img" not in out
    assert tracking.tracked_html(html, base_url="https://app.test", token="T", links=[], pixel=True).endswith(
        '<img src="https://app.test/t/o/T.gif" width="1" height="1" alt="" style="border:0;width:1px;height:1px">'
    )


def test_safe_targets_are_http_or_https_only() -> None:
    assert tracking.safe_target("https://a.test/x") == "https://a.test/x"
    for bad in (
        "javascript:alert(1)",
        "data:text/html,x",
        " JAVASCRIPT:x",
        "//evil.test",
        "https:///x",
        "http://a\r\nb",
    ):
        assert tracking.safe_target(bad) is None


def test_verdicts() -> None:
    def v(
        method: str = "GET", ua: str = "Mozilla/5.0 (X11) Chrome/120", seconds: float = 60, referer: str = ""
    ) -> str | None:
        hit = tracking.Hit("t", "open", None, method, ua, referer)
        now = SENT + dt.timedelta(seconds=seconds)
        return tracking.verdict(hit, sent_at=SENT, now=now, quiet=5, own_origin="https://app.test")

    assert v() is None
    assert v(method="HEAD") == "head"
    assert v(ua="Mozilla/5.0") == "apple_mpp"
    assert v(ua="Mozilla/5.0 (compatible; Proofpoint URL Defense)") == "scanner"
    assert v(ua="") == "scanner"
    assert v(seconds=1) == "too_soon"
    assert v(referer="https://app.test/connect/x") == "sender"
    assert v(ua="Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)") is None


def test_rich_text_to_plain_keeps_lists_quotes_and_links() -> None:
    value = {
        "type": "rich_text",
        "elements": [
            {
                "type": "rich_text_list",
                "style": "ordered",
                "elements": [
                    {"type": "rich_text_section", "elements": [{"type": "text", "text": "one"}]},
                    {
                        "type": "rich_text_section",
                        "elements": [{"type": "text", "text": "two", "style": {"bold": True}}],
                    },
                ],
            },
            {"type": "rich_text_preformatted", "elements": [{"type": "text", "text": "a < b"}]},
        ],
    }
    assert richtext.to_plain(value) == "1. one\n2. *two*\na < b\n"
    assert richtext.to_html(value) == "<ol><li>one</li><li><b>two</b></li></ol><pre>a &lt; b</pre>"
