"""Unit tests of the parser: addresses, encodings, bodies, and never raising."""

from __future__ import annotations

import datetime as dt

from sync.parse import parse_body, parse_headers

HEADER = (
    b"From: =?utf-8?q?J=C3=B6rg?= <JOERG@Example.COM>\r\n"
    b"Sender: assistant@example.com\r\n"
    b"Reply-To: Replies <replies@example.com>\r\n"
    b'To: Partners: a@x.org, "Last, First" <B@Y.org>;, c@z.org\r\n'
    b"Cc: undisclosed-recipients:;\r\n"
    b"Bcc: hidden@example.com\r\n"
    b"Subject: =?iso-8859-1?q?caf=E9?= ok\r\n"
    b"Message-ID: <a@b>\r\n"
    b"References: <root@b> <parent@b>\r\n"
    b"Date: Thu, 1 Jan 2026 10:00:00 +0100\r\n\r\n"
)


def test_addresses_in_every_role_with_groups_and_encoded_names():
    h = parse_headers(HEADER)
    by_role = {}
    for a in h.addresses:
        by_role.setdefault(a.role, []).append((a.email, a.name))
    assert by_role["from"] == [("joerg@example.com", "Jörg")]
    assert by_role["sender"] == [("assistant@example.com", None)]
    assert by_role["reply_to"] == [("replies@example.com", "Replies")]
    assert by_role["to"] == [("a@x.org", None), ("b@y.org", "Last, First"), ("c@z.org", None)]
    assert "cc" not in by_role
    assert by_role["bcc"] == [("hidden@example.com", None)]
    assert h.subject == "café ok" and h.message_id == "<a@b>" and h.thread_key == "<root@b>"
    assert h.date == dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.UTC)


def test_garbage_headers_do_not_raise():
    h = parse_headers(b"\xff\xfe\x00garbage without colon\r\nFrom: <<<>>>\r\nDate: yesterday\r\n\r\n")
    assert h.date is None and h.message_id is None and h.addresses == []


def test_body_text_html_attachments_and_snippet():
    raw = (
        b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
        b"Content-Type: multipart/alternative; boundary=YY\r\n\r\n--YY\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\nH\xe9llo   world\r\n--YY\r\n"
        b"Content-Type: text/html\r\n\r\n<p>Hello <b>world</b></p>\r\n--YY--\r\n--XX\r\n"
        b"Content-Type: application/pdf; name=report.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERi0xLjQK\r\n--XX--\r\n"
    )
    body = parse_body(raw)
    assert body.text.startswith("Héllo") and body.snippet == "Héllo world"
    assert "<b>world</b>" in body.html
    assert body.attachments == [{"name": "report.pdf", "type": "application/pdf", "size": 9}]


def test_html_only_snippet_strips_tags():
    body = parse_body(b"Content-Type: text/html\r\n\r\n<style>p{}</style><p>Hi &amp; bye</p>")
    assert body.snippet == "Hi & bye" and body.text is None
