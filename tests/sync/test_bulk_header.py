"""Mailings are recognised at sync time from their headers: List-Id, or Precedence bulk, list or junk."""

from __future__ import annotations

import pytest

from sync.parse import parse_headers

BASE = b"From: News <news@letters.com>\r\nTo: me@x.test\r\nSubject: Hi\r\n"


@pytest.mark.parametrize(
    ("extra", "bulk"),
    [
        (b"", False),
        (b"List-Id: Letters <letters.example.com>\r\n", True),
        (b"Precedence: bulk\r\n", True),
        (b"Precedence: List\r\n", True),
        (b"precedence:  junk \r\n", True),
        (b"Precedence: first-class\r\n", False),
        (b"List-Unsubscribe: <mailto:x@y>\r\n", False),  # a header many person-to-person tools add too
    ],
)
def test_bulk_headers(extra: bytes, bulk: bool) -> None:
    assert parse_headers(BASE + extra + b"\r\n").bulk is bulk
