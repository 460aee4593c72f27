"""UID FETCH on the hot path: commands pipelined on one connection, answers parsed by one regex.

imapclient's response parser reads every character through a Python iterator; BODYSTRUCTURE makes
that the largest cost of a header FETCH. ``parse_fetch`` tokenizes with a single compiled regex
instead and builds the same values imapclient does (numbers as int, NIL as None, strings and literals
as bytes, lists as tuples, keys upper-cased, INTERNALDATE as datetime). Anything it does not
understand falls back to imapclient's parser, so the result never depends on which one ran.
"""

from __future__ import annotations

import datetime as dt
import imaplib
import logging
import re
from collections.abc import Sequence
from typing import Any

from imapclient import IMAPClient
from imapclient.datetime_util import parse_to_datetime
from imapclient.exceptions import IMAPClientError
from imapclient.imapclient import seq_to_parenstr_upper
from imapclient.response_parser import parse_fetch_response

Command = tuple[Sequence[int], Sequence[bytes]]  # (UIDs, FETCH items)
FetchData = dict[int, dict[bytes, Any]]

# One token per match: an atom, a quoted string, a parenthesis or a literal marker {n}; the last group
# catches any other non-space character, which sends the response to imapclient's parser. An atom may
# carry a section in brackets, spaces and parentheses included: BODY[HEADER.FIELDS (FROM TO)]<0>.
_TOKENS = re.compile(
    rb"""([^ ()"{\[\]]++(?:\[[^\]]*\][^ ()"{]*)?)|("[^"\\]*+(?:\\.[^"\\]*+)*+")|(\()|(\))|\{(\d+)\+?\}|([^ ])""",
    re.S,
)
_ATOM, _QUOTED, _OPEN, _CLOSE, _LITERAL = 1, 2, 3, 4, 5  # its groups; 6 is anything else
_ESCAPE = re.compile(rb"\\(.)", re.S)
_INTERNALDATE = re.compile(rb" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-]\d\d)(\d\d)")
_MONTHS = {m: i for i, m in enumerate(b"JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)}
_zones: dict[bytes, dt.timezone] = {}
_imaplib_log = logging.getLogger("imapclient.imaplib")


class _Unparsed(Exception):
    """Not a FETCH response this parser knows; imapclient's parser takes over."""


class FetchPipe:
    """UID FETCH commands on one connection, sent ahead and collected later (IMAP pipelining).

    ``send`` writes a command and returns at once; ``collect`` reads until the given commands are
    answered and returns their data by UID. The server answers in order, so data of a command sent
    later that has already been read is kept for its own ``collect``. UID sets of commands that are
    outstanding together must not overlap. Every FETCH on the connection goes through the one pipe.
    """

    def __init__(self, client: IMAPClient) -> None:
        self.client = client
        if not _imaplib_log.isEnabledFor(logging.DEBUG):
            # imapclient sets imaplib's debug level to 5 and sends its messages to this logger, so
            # imaplib formats a repr of every response line and literal (whole message bodies) only
            # for the logger to drop it: about a quarter of the CPU of a past sync.
            client._imap.debug = 0
        self._outstanding: dict[bytes, frozenset[int]] = {}  # tag -> UIDs, in sending order
        self._early: FetchData = {}  # read while collecting an earlier command

    def send(self, uids: Sequence[int], items: Sequence[bytes]) -> bytes:
        """Send ``UID FETCH uids (items)``; the tag is what ``collect`` takes."""
        imap = self.client._imap
        tag: bytes = imap._command("UID", "FETCH", ",".join(str(u) for u in uids), seq_to_parenstr_upper(list(items)))
        self._outstanding[tag] = frozenset(uids)
        return tag

    def collect(self, tags: Sequence[bytes]) -> FetchData:
        """Wait for these commands; their data by UID.

        A FETCH the server refuses (NO or BAD) raises IMAPClientError, after every one of ``tags`` is
        answered, so the connection stays usable; a broken connection raises at once.
        """
        imap = self.client._imap
        results: list[tuple[str, Any]] = []
        refused: IMAPClientError | None = None
        for tag in tags:
            try:
                results.append(imap._command_complete("FETCH", tag))
            except imaplib.IMAP4.abort:
                raise
            except IMAPClientError as exc:  # BAD: this command only
                refused = refused or exc
        wanted: set[int] = set()
        for tag in tags:
            wanted |= self._outstanding.pop(tag, frozenset())
        later: set[int] = set().union(*self._outstanding.values())
        _typ, data = imap._untagged_response("OK", [None], "FETCH")
        out: FetchData = {}
        early: FetchData = {}
        for source in (self._early, parse_fetch(data, normalise_times=self.client.normalise_times)):
            for uid, fields in source.items():
                if uid in wanted:
                    out.setdefault(uid, {}).update(fields)
                elif uid in later:
                    early.setdefault(uid, {}).update(fields)
                # anything else is an unsolicited FETCH (a flag change seen by the server): not ours
        self._early = early
        if refused is not None:
            raise refused
        for typ, result in results:
            self.client._checkok("fetch", typ, result)
        return out

    def fetch(self, commands: Sequence[Command]) -> FetchData:
        """Send every command at once, then collect them all: one round trip for all of them."""
        tags = [self.send(uids, items) for uids, items in commands if uids]
        return self.collect(tags) if tags else {}


def parse_fetch(data: list[Any], *, normalise_times: bool = False) -> FetchData:
    """imaplib's untagged FETCH records, keyed by UID (by sequence number when a response has no UID)."""
    if not data or data == [None]:
        return {}
    try:
        return _parse(data, normalise_times)
    except (_Unparsed, ValueError, IndexError, TypeError):
        parsed = parse_fetch_response(data, normalise_times, True)
        return {uid: fields for uid, fields in parsed.items() if isinstance(uid, int)}


def _parse(data: list[Any], normalise_times: bool) -> FetchData:
    # imaplib splits a response at each literal: (text ending in {n}, literal bytes) records, then
    # the text after the last literal. Joined, the texts are the response with the literals cut out.
    texts: list[bytes] = []
    literals: list[bytes] = []
    for record in data:
        if isinstance(record, tuple):
            texts.append(record[0])
            literals.append(record[1])
        elif isinstance(record, bytes):
            texts.append(record)
        else:
            raise _Unparsed
    lit_iter = iter(literals)
    out: FetchData = {}
    stack: list[list[Any]] = []
    current: list[Any] = []  # the top level: seq, (items), seq, (items), ...
    for m in _TOKENS.finditer(b" ".join(texts)):
        kind = m.lastindex
        if kind == _ATOM:
            atom = m.group(_ATOM)
            if atom.isdigit() and (atom[:1] != b"0" or len(atom) == 1):
                current.append(int(atom))
            elif atom == b"NIL":
                current.append(None)
            else:
                current.append(atom)
        elif kind == _QUOTED:
            quoted = m.group(_QUOTED)
            current.append(_ESCAPE.sub(rb"\1", quoted[1:-1]) if b"\\" in quoted else quoted[1:-1])
        elif kind == _OPEN:
            stack.append(current)
            current = []
        elif kind == _CLOSE:
            if not stack:
                raise _Unparsed
            done = tuple(current)
            current = stack.pop()
            if stack:
                current.append(done)
            else:
                _add_message(out, current.pop() if current else None, done, normalise_times)
        elif kind == _LITERAL:
            value = next(lit_iter)
            if len(value) != int(m.group(_LITERAL)):
                raise _Unparsed
            current.append(value)
        else:
            raise _Unparsed  # a character no FETCH response has here
    if stack or current or next(lit_iter, None) is not None:
        raise _Unparsed
    return out


def _add_message(out: FetchData, seq: object, items: tuple[Any, ...], normalise_times: bool) -> None:
    if not isinstance(seq, int) or len(items) % 2:
        raise _Unparsed
    fields: dict[bytes, Any] = {b"SEQ": seq}
    key = seq
    for i in range(0, len(items), 2):
        name = items[i]
        if not isinstance(name, bytes):
            raise _Unparsed
        name = name.upper()
        value = items[i + 1]
        if name == b"UID":
            if not isinstance(value, int):
                raise _Unparsed
            key = value
        elif name == b"INTERNALDATE":
            fields[name] = _internaldate(value, normalise_times)
        elif name in (b"ENVELOPE", b"BODY") and not isinstance(value, bytes):
            raise _Unparsed  # imapclient converts these; we never ask for them
        else:
            fields[name] = value
    out.setdefault(key, {}).update(fields)


def _internaldate(value: object, normalise_times: bool) -> dt.datetime | None:
    """INTERNALDATE as imapclient gives it: aware with the server's offset (local naive if normalised)."""
    if value is None:
        return None
    m = _INTERNALDATE.fullmatch(value) if isinstance(value, bytes) and not normalise_times else None
    month = _MONTHS.get(m.group(2).upper()) if m else None
    if m is None or month is None:
        parsed: dt.datetime = parse_to_datetime(value, normalise=normalise_times)  # imapclient has no types
        return parsed
    day, _, year, hour, minute, second, zh, zm = m.groups()
    zone = _zones.get(zh + zm)
    if zone is None:
        sign = -1 if zh[:1] == b"-" else 1
        zone = _zones[zh + zm] = dt.timezone(sign * dt.timedelta(hours=abs(int(zh)), minutes=int(zm)))
    return dt.datetime(int(year), month, int(day), int(hour), int(minute), int(second), tzinfo=zone)
