"""Reading a message body through its BODYSTRUCTURE: fetch only the text parts, never an attachment.

The header FETCH also asks for ``BODYSTRUCTURE``. From it, ``plan_body`` picks the parts that are
stored (the first text/plain and the first text/html leaf that are not attachments, in the order
``email.message.Message.walk`` would visit them) and takes the attachment metadata from the structure
alone. The engine then fetches ``BODY.PEEK[<part>]`` for those parts only and ``build_body`` decodes
them by the structure's Content-Transfer-Encoding and charset. The result means the same as
``parse_body`` of the whole message, with one documented difference: an attachment's ``size`` is
computed from the encoded size the server reports (for base64, exact to a few bytes when the lines are
the usual 76 columns) instead of by decoding it.

A structure that cannot be read yields ``None``: the caller then fetches and parses the whole message.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message as EmailMessage
from email.utils import collapse_rfc2231_value, decode_params, unquote

from sync.parse import Body, decode_words, make_snippet, strip_html

_MAX_DEPTH = 40  # nesting deeper than this is not mail, it is an attack on the recursion limit
_DIRECT_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})
_ASCII_CHARSETS = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968"})


class _Unplannable(Exception):
    """The structure is not what RFC 3501 describes."""


@dataclass(slots=True, frozen=True)
class TextPart:
    """One part to fetch: its IMAP part number and how to decode it."""

    spec: str  # "1", "1.2", "2.1.1"
    encoding: str  # Content-Transfer-Encoding, lower-cased ("" when absent)
    charset: str | None  # lower-cased, None when absent or not ASCII
    octets: int  # encoded size the server reports


@dataclass(slots=True)
class BodyPlan:
    """What to fetch for a message and what the structure already tells."""

    text: TextPart | None = None
    html: TextPart | None = None
    attachments: list[dict[str, object]] = field(default_factory=list)
    single: bool = False  # the message is one text part: its body is all there is after the header

    def parts(self) -> tuple[TextPart, ...]:
        """The parts to fetch, text first."""
        if self.text is None:
            return () if self.html is None else (self.html,)
        return (self.text,) if self.html is None else (self.text, self.html)

    def specs(self) -> tuple[str, ...]:
        """Part numbers to fetch; messages with the same specs share one FETCH."""
        return tuple(p.spec for p in self.parts())

    def octets(self) -> int:
        """Bytes the FETCH of the parts brings (memory is bounded by summing this)."""
        return sum(p.octets for p in self.parts())

    def sections(self) -> tuple[str, ...]:
        """The body sections to FETCH: "" (the whole message) for a single part, else the parts."""
        return ("",) if self.single else self.specs()


def plan_body(structure: object) -> BodyPlan | None:
    """The fetch plan of a message from its parsed BODYSTRUCTURE, or None when it cannot be read."""
    if not isinstance(structure, (tuple, list)) or not structure:
        return None
    plan = BodyPlan()
    try:
        _visit(structure, "", plan, 0)
    except (_Unplannable, TypeError, ValueError, IndexError, AttributeError, RecursionError):
        return None
    plan.single = not _is_multipart(structure) and plan.specs() == ("1",)
    return plan


def build_body(plan: BodyPlan, parts: Mapping[str, bytes]) -> Body:
    """The stored body from the fetched parts (``parts`` maps part number to the encoded bytes)."""
    body = Body(attachments=list(plan.attachments))
    if plan.text is not None:
        body.text = decode_part(parts[plan.text.spec], plan.text)
    if plan.html is not None:
        body.html = decode_part(parts[plan.html.spec], plan.html)
    source = body.text if body.text is not None else strip_html(body.html) if body.html else None
    if source:
        body.snippet = make_snippet(source)
    return body


def decode_part(data: bytes, part: TextPart) -> str:
    """Undo the transfer encoding, then decode the charset (undeclared or ASCII is read as UTF-8)."""
    raw = _transfer_decode(data, part.encoding)
    charset = part.charset
    if charset is None or charset in _ASCII_CHARSETS:
        charset = "utf-8"  # ASCII is a subset; 8-bit bytes in "ASCII" mail are UTF-8 more often than not
    try:
        return raw.decode(charset, "replace")
    except (LookupError, ValueError):  # an unknown or broken charset name
        return raw.decode("utf-8", "replace")


def decoded_size(encoding: str, octets: int) -> int:
    """The decoded size of a part from its encoded size, without reading it.

    base64 carries 3 bytes in 4 characters, on lines of 76 characters ended by CRLF (the last line's
    CRLF may be missing: of the two counts, the one leaving a multiple of 4 characters is taken). For
    such lines the result is exact up to the padding, at most 2 bytes over. Other encodings are
    counted as sent (quoted-printable attachments are rare and only shrink when decoded).
    """
    if encoding == "base64":
        lines = -(-octets // 78)
        chars = octets - 2 * lines
        if chars % 4 and (chars + 2) % 4 == 0:
            chars += 2  # the last line has no CRLF of its own
        return max(0, chars * 3 // 4)
    return octets


# ---- walking the structure -----------------------------------------------------------------------


def _is_multipart(node: Sequence[object]) -> bool:
    # imapclient's BodyData nests the parts of a multipart in a list; the body of an attached
    # message/rfc822 comes unconverted, with the parts as leading tuples.
    return isinstance(node[0], (list, tuple))


def _children(node: Sequence[object]) -> list[Sequence[object]]:
    if isinstance(node[0], list):
        return node[0]
    out: list[Sequence[object]] = []
    for item in node:
        if not isinstance(item, (list, tuple)):
            break
        out.append(item)
    return out


def _visit(node: Sequence[object], number: str, plan: BodyPlan, depth: int) -> None:
    """Visit a part; ``number`` is its own IMAP part number ("" for the message itself)."""
    if depth > _MAX_DEPTH or not isinstance(node, (list, tuple)) or not node:
        raise _Unplannable
    if _is_multipart(node):
        children = _children(node)
        if not children:
            raise _Unplannable
        for i, child in enumerate(children, 1):
            _visit(child, f"{number}.{i}" if number else str(i), plan, depth + 1)
        return
    _leaf(node, number or "1", plan, depth)


def _leaf(node: Sequence[object], spec: str, plan: BodyPlan, depth: int) -> None:
    if len(node) < 7:
        raise _Unplannable
    maintype = _lower(node[0]) or "text"
    subtype = _lower(node[1]) or "plain"
    ctype = f"{maintype}/{subtype}"
    if maintype == "message" and subtype in ("rfc822", "global"):
        # Like Message.walk, an attached message is looked into: its parts count like the others.
        inner = node[8] if len(node) > 8 else None
        if isinstance(inner, (list, tuple)) and inner:
            _visit(inner, spec if _is_multipart(inner) else f"{spec}.1", plan, depth + 1)
            return
    elif maintype == "message":
        return  # delivery-status and the like: header blocks, neither text nor attachment
    params = _params(node[2])
    encoding = _lower(node[5]) or ""
    octets = int(node[6] or 0)  # type: ignore[call-overload]
    # Extension data starts after the lines count (text/*) or envelope, body and lines (message/rfc822).
    ext = 8 if maintype == "text" else 10 if maintype == "message" else 7
    disposition, disposition_params = _disposition(node[ext + 1] if len(node) > ext + 1 else None)
    filename = _param(disposition_params, "filename")
    if filename is None:
        filename = _param(params, "name")
    filename = filename.strip() if filename is not None else None
    name = decode_words(filename) if filename else None
    if name or disposition == "attachment" or maintype != "text":
        plan.attachments.append({"name": name, "type": ctype, "size": decoded_size(encoding, octets)})
        return
    if subtype not in ("plain", "html") or (plan.text if subtype == "plain" else plan.html) is not None:
        return
    charset = _param(params, "charset")
    part = TextPart(spec, encoding, _clean_charset(charset), octets)
    if subtype == "plain":
        plan.text = part
    else:
        plan.html = part


def _text(value: object) -> str | None:
    """A structure string as str: UTF-8 when it is, else Windows-1252 (as for 8-bit headers)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value).decode("cp1252", "replace")
    if isinstance(value, int):
        return str(value)
    raise _Unplannable


def _lower(value: object) -> str | None:
    text = _text(value)
    return text.strip().lower() if text is not None else None


def _params(value: object) -> list[tuple[str, object]]:
    """Body parameters as (lower-case name, value), RFC 2231 continuations and charsets collapsed."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or len(value) % 2:
        raise _Unplannable
    pairs = [(_text(value[i]) or "", _text(value[i + 1]) or "") for i in range(0, len(value), 2)]
    if any("*" in name for name, _ in pairs):
        # The server passed RFC 2231 parameters through as written: collapse them like the email package.
        return [(name.lower(), _unquote(val)) for name, val in decode_params([("", ""), *pairs])[1:]]
    return [(name.lower(), val) for name, val in pairs]


def _unquote(value: object) -> object:
    """decode_params hands values back quoted; Message.get_param unquotes them the same way."""
    if isinstance(value, tuple):
        return value[0], value[1], unquote(value[2])
    return unquote(value) if isinstance(value, str) else value


def _param(params: list[tuple[str, object]], name: str) -> str | None:
    for key, value in params:
        if key == name:
            try:
                return collapse_rfc2231_value(value)  # type: ignore[arg-type]
            except Exception:
                return value if isinstance(value, str) else None
    return None


def _disposition(value: object) -> tuple[str, list[tuple[str, object]]]:
    if not isinstance(value, (list, tuple)) or not value:
        return "", []
    kind = _lower(value[0]) or ""
    return kind, _params(value[1]) if len(value) > 1 else []


def _clean_charset(charset: str | None) -> str | None:
    if not charset:
        return None
    charset = charset.strip().lower()
    try:
        charset.encode("ascii")
    except UnicodeEncodeError:
        return None
    return charset or None


def _transfer_decode(data: bytes, encoding: str) -> bytes:
    if encoding in _DIRECT_ENCODINGS:
        return data
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data)
    if encoding == "base64":
        try:
            return binascii.a2b_base64(data)
        except (binascii.Error, ValueError):
            pass  # bad padding or length: the email package's lenient decoder below
    return _email_decode(data, encoding)


def _email_decode(data: bytes, encoding: str) -> bytes:
    """Decode like compat32's get_payload(decode=True): lenient base64, uuencode, anything else as is."""
    part = EmailMessage()
    part["Content-Transfer-Encoding"] = encoding
    part.set_payload(data.decode("ascii", "surrogateescape"))
    try:
        decoded = part.get_payload(decode=True)
    except Exception:
        return data
    return decoded if isinstance(decoded, bytes) else data
