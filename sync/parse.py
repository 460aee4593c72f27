"""Message parsing, the hot path: compat32 parsing, decoding only what is stored, never raising."""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from email.header import decode_header
from email.message import Message as EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime

ADDRESS_ROLES = ("from", "sender", "reply_to", "to", "cc", "bcc")
_HEADER_OF_ROLE = {
    "from": "From",
    "sender": "Sender",
    "reply_to": "Reply-To",
    "to": "To",
    "cc": "Cc",
    "bcc": "Bcc",
}
SNIPPET_CHARS = 200
_header_parser = BytesHeaderParser(policy=compat32)
_body_parser = BytesParser(policy=compat32)
_ws = re.compile(r"\s+")
_tags = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)
_msgid = re.compile(r"<[^<>\s]+>")


@dataclass(slots=True)
class Address:
    """One address of a header, lower-cased, with its decoded display name."""

    role: str
    position: int
    email: str
    name: str | None


@dataclass(slots=True)
class Headers:
    """What the engine needs from a message's header block."""

    message_id: str | None
    subject: str | None
    date: dt.datetime | None
    thread_key: str | None
    addresses: list[Address]
    header_hash: str

    def emails(self) -> set[str]:
        """Every address in From, Sender, Reply-To, To, Cc and Bcc."""
        return {a.email for a in self.addresses}

    def sender(self) -> str | None:
        """The first From address."""
        return next((a.email for a in self.addresses if a.role == "from"), None)


@dataclass(slots=True)
class Body:
    """The stored parts of a message body."""

    text: str | None = None
    html: str | None = None
    snippet: str | None = None
    attachments: list[dict[str, object]] = field(default_factory=list)

    def attachments_json(self) -> str | None:
        """Attachment metadata as JSON, or None when there is none."""
        return json.dumps(self.attachments, ensure_ascii=False) if self.attachments else None


def parse_headers(raw_header: bytes) -> Headers:
    """Parse a header block; malformed or 8-bit headers degrade to their readable parts."""
    fields = _raw_fields(_header_parser.parsebytes(raw_header))
    message_id = _first_msgid(_first(fields, "message-id"))
    refs = _msgid.findall(_text(_first(fields, "references")) or "")
    in_reply_to = _first_msgid(_first(fields, "in-reply-to"))
    thread_key = refs[0] if refs else in_reply_to or message_id
    return Headers(
        message_id=message_id,
        subject=decode_words(_first(fields, "subject")),
        date=_parse_date(_first(fields, "date")),
        thread_key=thread_key,
        addresses=_addresses(fields),
        header_hash=hashlib.sha256(raw_header).hexdigest(),
    )


def parse_body(raw: bytes) -> Body:
    """Text, HTML, snippet and attachment metadata of a whole message."""
    msg = _body_parser.parsebytes(raw)
    body = Body()
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        filename = _filename(part)
        disposition = (part.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()
        if filename or disposition == "attachment" or not ctype.startswith("text/"):
            payload = _payload(part)
            body.attachments.append({"name": filename, "type": ctype, "size": len(payload)})
            continue
        if ctype == "text/plain" and body.text is None:
            body.text = _decode_payload(part)
        elif ctype == "text/html" and body.html is None:
            body.html = _decode_payload(part)
    source = body.text if body.text is not None else strip_html(body.html) if body.html else None
    if source:
        body.snippet = make_snippet(source)
    return body


def make_snippet(text: str) -> str:
    """The first SNIPPET_CHARS characters of the text, whitespace runs collapsed and the ends stripped.

    Only a growing head of the text is looked at: the result equals collapsing the whole text.
    """
    size = 4 * SNIPPET_CHARS
    while True:
        head = _ws.sub(" ", text[:size]).strip()
        # Past SNIPPET_CHARS, the head ends in a non-space: the whole text cannot differ before it.
        if len(head) > SNIPPET_CHARS or size >= len(text):
            return head[:SNIPPET_CHARS]
        size *= 8


def strip_html(markup: str) -> str:
    """Readable text of HTML (tags, scripts and styles dropped, entities decoded), for the snippet."""
    return html.unescape(_tags.sub(" ", markup))


def decode_words(value: str | None) -> str | None:
    """Decode RFC 2047 encoded words and stray 8-bit bytes into clean Unicode."""
    if value is None:
        return None
    value = _text(value) or ""
    if "=?" not in value:
        return _ws.sub(" ", value).strip()
    try:
        parts = []
        for chunk, charset in decode_header(value):
            if isinstance(chunk, bytes):
                # decode_header hands back the unencoded parts as raw-unicode-escape bytes.
                parts.append(chunk.decode("raw-unicode-escape") if charset is None else _decode_bytes(chunk, charset))
            else:
                parts.append(chunk)
        # decode_header keeps the whitespace between an encoded and a plain word inside the chunks.
        return _ws.sub(" ", "".join(parts)).strip()
    except Exception:
        return _ws.sub(" ", value).strip()


def _raw_fields(msg: EmailMessage) -> dict[str, list[str]]:
    """Header values as parsed, 8-bit bytes still as surrogates (msg.get would blur them into U+FFFD)."""
    fields: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        fields.setdefault(name.lower(), []).append(value)
    return fields


def _first(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values else None


def _addresses(fields: dict[str, list[str]]) -> list[Address]:
    out: list[Address] = []
    for role in ADDRESS_ROLES:
        values = fields.get(_HEADER_OF_ROLE[role].lower())
        if not values:
            continue
        # getaddresses understands group syntax ("team: a@x, b@y;") and comments.
        pairs = getaddresses([_text(v) or "" for v in values])
        position = 0
        for name, addr in pairs:
            addr = addr.strip().strip("<>").lower()
            if "@" not in addr:
                continue
            out.append(Address(role, position, addr, decode_words(name) or None))
            position += 1
    return out


def _text(value: object) -> str | None:
    """Header value as str; compat32 gives 8-bit bytes as surrogates, which we decode as UTF-8."""
    if value is None:
        return None
    text = str(value)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        raw = text.encode("ascii", "surrogateescape")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # Not UTF-8: legacy clients wrote 8-bit headers in Windows-1252 far more than anything else.
            return raw.decode("cp1252", "replace")


def _first_msgid(value: object) -> str | None:
    text = _text(value)
    if not text:
        return None
    found = _msgid.search(text)
    token = found.group(0) if found else text.strip()
    return token[:998] or None


def _parse_date(value: object) -> dt.datetime | None:
    text = _text(value)
    if not text:
        return None
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _filename(part: EmailMessage) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    return decode_words(name) if name else None


def _payload(part: EmailMessage) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    return data if isinstance(data, bytes) else b""


def _decode_payload(part: EmailMessage) -> str:
    return _decode_bytes(_payload(part), part.get_content_charset())


def _decode_bytes(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", "replace")
    except LookupError:  # an unknown charset name
        return data.decode("utf-8", "replace")

