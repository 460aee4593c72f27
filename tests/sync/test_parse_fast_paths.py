"""The parser's fast paths give exactly what the email package gives, on fuzzed input.

header_fields replaces compat32's feedparser, simple_addresses replaces getaddresses for plain
lists, make_snippet looks only at the head of the text: each is checked against the slow original.
"""

from __future__ import annotations

import random
import re
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

from sync.bodystructure import TextPart, decode_part, decoded_size
from sync.parse import _WANTED_FIELDS, _text, header_fields, make_snippet, parse_headers, simple_addresses

_feedparser = BytesHeaderParser(policy=compat32)


def feedparser_fields(raw: bytes) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for name, value in _feedparser.parsebytes(raw).raw_items():
        if name.lower().encode("ascii", "surrogateescape") in _WANTED_FIELDS:
            fields.setdefault(name.lower(), []).append(_text(value) or "")
    return fields


LINES = [
    b"From: a@b",
    b"To: x",
    b" folded",
    b"\tfolded with tab",
    b"From mbox envelope",
    b"From  y",
    b": no name",
    b"Subject:tight",
    b"subject : spaced name",
    b"Date: Thu, 1 Jan 2026 10:00:00 +0100",
    b"not a header line",
    b"\xff\xfe: eight-bit name",
    b"Cc: \xc3\xa4 utf-8",
    b"Cc: \xe4 latin-1",
    b"",
    b"X-Other: y",
    b"Message-ID: <a@b>",
    b"References: <r@x>",
    b"To:",
    b"Reply-To: r",
    b"From:x\x0by",
    b" ",
    b"To: a\rb",
]


def test_header_fields_split_like_the_feedparser():
    rng = random.Random(20261127)
    for _ in range(20_000):
        raw = b"".join(rng.choice(LINES) + rng.choice((b"\r\n", b"\n", b"\r", b"")) for _ in range(rng.randint(0, 8)))
        assert header_fields(raw) == feedparser_fields(raw), raw


def test_parse_headers_of_a_folded_eight_bit_block():
    raw = (
        b"From: =?utf-8?q?J=C3=B6rg?= <joerg@example.com>,\r\n Second <second@example.com>\r\n"
        b"To: \xc3\x9cml\xc3\xa4ut <u@example.org>\r\nSubject: caf\xe9\r\n\tfolded\r\n\r\n"
    )
    h = parse_headers(raw)
    assert [(a.role, a.email, a.name) for a in h.addresses] == [
        ("from", "joerg@example.com", "Jörg"),
        ("from", "second@example.com", "Second"),
        ("to", "u@example.org", "Ümläut"),
    ]
    assert h.subject == "café folded"


ADDRESS_TOKENS = [
    "a", "B", "jörg", "=?utf-8?q?J=C3=B6rg?=", ".", "@", "<", ">", ",", " ", "  ", "\t", "\r\n ", "x.y",
    "ex-ample", "com", "\xa0", "'", "+", "_", "é", "O'Brien", "-", "=", "?", "~", "1", "..", "a@b.c",
    "<a@b.c>", "Name <n@x.org>", "\u2003", "\x0b", "%", '"', "(c)", ":", ";",
]  # fmt: skip


def test_simple_addresses_agree_with_getaddresses():
    rng = random.Random(7)
    fast_paths = 0
    for _ in range(60_000):
        values = ["".join(rng.choice(ADDRESS_TOKENS) for _ in range(rng.randint(0, 12))) for _ in range(2)]
        fast = simple_addresses(values)
        if fast is None:
            continue
        fast_paths += 1

        def kept(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
            return [(n, a) for n, a in pairs if "@" in a.strip().strip("<>")]

        assert kept(fast) == kept(getaddresses(values)), values
    assert fast_paths > 500


def test_simple_addresses_reads_the_usual_forms():
    assert simple_addresses(["Anna Müller <anna@example.com>, bob@example.org", "Ćwik  J. <c@x.y>"]) == [
        ("Anna Müller", "anna@example.com"),
        ("", "bob@example.org"),
        ("Ćwik J.", "c@x.y"),
    ]
    for odd in ('"Last, First" <a@b.c>', "Team: a@b.c;", "a@b.c (comment)", "<@route:a@b.c>", "a@[1.2.3.4]"):
        assert simple_addresses([odd]) is None


def test_snippet_of_the_head_equals_the_snippet_of_the_whole():
    ws = re.compile(r"\s+")
    rng = random.Random(3)
    alphabet = ["a", "b", " ", "\t", "\n", "\r", "\xa0", "\u2003", "\x1c", "é", "     " * 60]
    for _ in range(5_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3000)))
        assert make_snippet(text) == ws.sub(" ", text).strip()[:200]


def test_decode_part_by_encoding_and_charset():
    def part(encoding: str, charset: str | None) -> TextPart:
        return TextPart("1", encoding, charset, 0)

    assert decode_part(b"Caf=E9 =\r\nau lait", part("quoted-printable", "iso-8859-1")) == "Café au lait"
    assert decode_part(b"w6Rwcmlj\r\nb3Q=", part("base64", "utf-8")) == "äpricot"
    assert decode_part(b"w6Rwcmljb3Q", part("base64", "utf-8")) == "äpricot"  # padding missing
    assert decode_part(b"\x93hi\x94", part("8bit", "windows-1252")) == "\u201chi\u201d"
    assert decode_part(b"\xc3\xa4", part("7bit", "us-ascii")) == "ä"  # 8-bit "ASCII" is read as UTF-8
    assert decode_part(b"\xc3\xa4", part("", "no-such-charset")) == "ä"
    assert decode_part(b"\xff", part("binary", None)) == "\ufffd"
    uu = b"begin 644 x\n#86)C\n`\nend\n"
    assert decode_part(uu, part("x-uuencode", "utf-8")) == "abc"


def test_decoded_size_of_base64():
    import base64

    for n in (0, 1, 2, 3, 56, 57, 58, 1000, 40_000, 60_001):
        data = bytes(range(256)) * (n // 256 + 1)
        encoded = base64.encodebytes(data[:n]).replace(b"\n", b"\r\n")
        for body in (encoded, encoded.rstrip(b"\r\n")):  # with and without the last line's CRLF
            assert 0 <= decoded_size("base64", len(body)) - n <= 2, (n, len(body))
    assert decoded_size("quoted-printable", 100) == 100
