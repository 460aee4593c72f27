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
from email.parser import BytesParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from functools import lru_cache

ADDRESS_ROLES = ("from", "sender", "reply_to", "to", "cc", "bcc")
_FIELD_OF_ROLE = {role: role.replace("_", "-") for role in ADDRESS_ROLES}  # lower-case header names
SNIPPET_CHARS = 200
_body_parser = BytesParser(policy=compat32)
# compat32's feedparser: a header line is "From ", a field name and a colon, or a continuation.
_header_line = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
_WANTED_FIELDS = frozenset(
    {b"message-id", b"references", b"in-reply-to", b"subject", b"date", b"list-id", b"precedence"}
    | {f.encode() for f in _FIELD_OF_ROLE.values()}
)
# Precedence values of mailings (RFC 2076; "junk" and "list" are older spellings of the same thing).
_BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})
_ws = re.compile(r"\s+")
_tags = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)
_msgid = re.compile(r"<[^<>\s]+>")
# The plain address lists simple_addresses reads; getaddresses's whitespace is exactly " \t\r\n".
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ADDR_SPEC = rf"{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PHRASE_ATOM = r'[^\s()<>@,:;"\[\]\\]+'
_not_plain = re.compile(r'["():;\[\]\\]')
_fws = re.compile(r"[ \t\r\n]+")
_blank = re.compile(r"[ \t\r\n]*")
_name_addr = re.compile(
    rf"[ \t\r\n]*(?:({_PHRASE_ATOM}(?:[ \t\r\n]+{_PHRASE_ATOM})*)[ \t\r\n]*)?<({_ADDR_SPEC})>[ \t\r\n]*"
)
_bare_addr = re.compile(rf"[ \t\r\n]*({_ADDR_SPEC})[ \t\r\n]*")


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
    bulk: bool = False  # a mailing (List-Id, or Precedence: bulk): its sender is no one to suggest as a contact

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
    fields = header_fields(raw_header)
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
        bulk=_is_bulk(fields),
    )


def _is_bulk(fields: dict[str, list[str]]) -> bool:
    """A mailing-list or bulk message: a List-Id header, or Precedence bulk, list or junk."""
    if fields.get("list-id"):
        return True
    return any(value.strip().lower() in _BULK_PRECEDENCE for value in fields.get("precedence", ()))


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
    size = 2 * SNIPPET_CHARS
    while True:
        # str.split() splits at the characters \s matches; joining is the same as _ws.sub + strip.
        head = " ".join(text[:size].split())
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


def header_fields(raw: bytes, wanted: frozenset[bytes] | None = None) -> dict[str, list[str]]:
    """The values of the wanted header fields (lower-case name -> values in order), decoded.

    Splits the block exactly as compat32's feedparser does (the header ends at the first line that is
    neither a field, a continuation nor a "From " line; folded values keep their line breaks), without
    building a Message. Values are decoded like ``_text``: UTF-8, else Windows-1252.
    """
    wanted = _WANTED_FIELDS if wanted is None else wanted
    lines = raw.splitlines(keepends=True)
    count = 0
    for line in lines:
        if not _header_line.match(line):
            break
        count += 1
    fields: dict[str, list[str]] = {}
    name: bytes | None = None  # the field being read, None for no field or one we do not want
    value: list[bytes] = []
    for lineno in range(count):
        line = lines[lineno]
        if line[:1] in (b" ", b"\t"):
            if name is not None:  # else it continues a field we skip, or none (a defect, dropped)
                value.append(line)
            continue
        if name is not None:
            _add_field(fields, name, value)
            name = None
        if line.startswith(b"From "):
            continue  # an mbox envelope line (or a misplaced one): not a header field
        colon = line.find(b":")
        if colon <= 0:
            continue  # ": value" without a name
        key = line[:colon].lower()
        if key in wanted:
            name, value = key, [line[colon + 1 :].lstrip(b" \t")]
    if name is not None:
        _add_field(fields, name, value)
    return fields


def _add_field(fields: dict[str, list[str]], name: bytes, value: list[bytes]) -> None:
    raw = b"".join(value).rstrip(b"\r\n")
    fields.setdefault(name.decode("ascii"), []).append(_decode_header_bytes(raw))


def _decode_header_bytes(raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Not UTF-8: legacy clients wrote 8-bit headers in Windows-1252 far more than anything else.
        return raw.decode("cp1252", "replace")


def _first(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values else None


def _addresses(fields: dict[str, list[str]]) -> list[Address]:
    out: list[Address] = []
    for role in ADDRESS_ROLES:
        values = fields.get(_FIELD_OF_ROLE[role])
        if values:
            # getaddresses joins the values with ", " itself: one string is the same question.
            out += [
                Address(role, position, email, name)
                for position, (email, name) in enumerate(_address_list(", ".join(values)))
            ]
    return out


@lru_cache(maxsize=1024)
def _address_list(value: str) -> tuple[tuple[str, str | None], ...]:
    """(lower-case address, decoded display name) of each address in a header value.

    Cached: the owner's address and the regular correspondents come back in most messages.
    """
    # getaddresses understands group syntax ("team: a@x, b@y;") and comments; it is also slow,
    # so the plain forms most mail uses are read by a regex that gives the same pairs.
    pairs = simple_addresses([value])
    if pairs is None:
        pairs = getaddresses([value])
    out = []
    for name, addr in pairs:
        addr = addr.strip().strip("<>").lower()
        if "@" in addr:
            out.append((addr, decode_words(name) or None))
    return tuple(out)


def simple_addresses(values: list[str]) -> list[tuple[str, str]] | None:
    """getaddresses(values) for plain lists ("Name <a@b.c>, d@e.f"); None for anything else.

    Plain means no quotes, comments, groups, routes or domain literals, ASCII dot-atom addresses and
    display names of atoms (8-bit and encoded words allowed) separated by spaces. For those, the
    display name getaddresses returns is the atoms joined by single spaces, and the address is as
    written; anything else goes to getaddresses itself.
    """
    joined = ", ".join(values)
    if _not_plain.search(joined):
        return None
    pairs: list[tuple[str, str]] = []
    for piece in joined.split(","):
        m = _name_addr.fullmatch(piece)
        if m is not None:
            phrase = m.group(1)
            pairs.append((" ".join(_fws.split(phrase)) if phrase else "", m.group(2)))
            continue
        m = _bare_addr.fullmatch(piece)
        if m is not None:
            pairs.append(("", m.group(1)))
        elif not _blank.fullmatch(piece):
            return None
    return pairs


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
