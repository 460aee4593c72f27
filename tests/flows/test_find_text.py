"""What find understands of a query, and how a thread's text is shown: quoted parts folded, HTML as text."""

from __future__ import annotations

import pytest

from flows.find import FindError, body_text, fold_quoted, parse_query
from models.find import Match, StoredMessage


@pytest.mark.parametrize(
    ("typed", "match"),
    [
        ("Jane@Acme.COM", Match("address", "jane@acme.com")),
        ("<mailto:jane@acme.com|jane@acme.com>", Match("address", "jane@acme.com")),  # as Slack sends it
        ("Jane Doe <jane@acme.com>", Match("address", "jane@acme.com")),
        ("acme.com", Match("domain", "acme.com")),
        ("@Sales.Acme.com", Match("domain", "sales.acme.com")),
        ("  Jane   Doe ", Match("name", "jane doe")),
        ("o'brien", Match("name", "o'brien")),
        ("50%_off", Match("name", "50%_off")),  # a name: LIKE wildcards are escaped in the query
    ],
)
def test_queries(typed: str, match: Match) -> None:
    assert parse_query(typed) == match


@pytest.mark.parametrize(
    ("typed", "says"), [("", "Tell me whom"), ("j", "two letters"), ("a@", "not an email"), ("x" * 201, "too long")]
)
def test_unusable_queries_say_why(typed: str, says: str) -> None:
    with pytest.raises(FindError, match=says):
        parse_query(typed)


def test_quoted_parts_fold_and_the_reply_stays() -> None:
    gmail = "Sounds good.\n\nOn Mon, 2 Mar 2026 at 10:00, Jane Doe <jane@acme.com>\nwrote:\n> Shall we?\n> J\n"
    assert fold_quoted(gmail) == ("Sounds good.\n\n[… 4 quoted lines folded]", 4)
    outlook = "Yes.\n\n-----Original Message-----\nFrom: Jane\nSent: Monday\nSubject: x\n\nShall we?\n"
    assert fold_quoted(outlook) == ("Yes.\n\n[… 5 quoted lines folded]", 5)
    inline = "See below.\n> question 1\nanswer 1\n> question 2\n> more\nanswer 2"
    assert fold_quoted(inline) == (
        "See below.\n[… 1 quoted line folded]\nanswer 1\n[… 2 quoted lines folded]\nanswer 2",
        3,
    )
    assert fold_quoted("Nothing quoted.\n") == ("Nothing quoted.", 0)


def stored(text: str | None = None, html: str | None = None, snippet: str | None = None) -> StoredMessage:
    return StoredMessage(1, 1, "k", "t", "s", None, "received", "private", snippet, text, html)


def test_body_text_prefers_the_text_part_then_the_html_part_as_text() -> None:
    assert body_text(stored("plain\r\ntext", "<p>html</p>")) == "plain\ntext"
    html = "<html><style>p{color:red}</style><p>Hi <b>Bob</b>,</p><div>Prices &amp; terms</div><script>x()</script>"
    assert body_text(stored(html=html)) == "Hi Bob ,\nPrices & terms"
    assert body_text(stored(snippet="only a snippet")) == "only a snippet"
