"""A small scriptable IMAP server over TLS that turns hostile once the client reaches a chosen point.

It speaks just enough IMAP for imapclient and the engine (greeting, CAPABILITY, LOGIN, LIST, STATUS,
SELECT/EXAMINE, UID SEARCH, UID FETCH, NOOP, ENABLE, LOGOUT) over a few small messages, then:

- ``normal``: answers everything (the sanity case, and "the next sync works").
- ``drip``: sends one byte every ``drip_interval`` seconds, forever: in the greeting (``drip_at="greeting"``),
  in the middle of the answer to a header FETCH (``drip_at="fetch"``) or to LIST (``drip_at="list"``). A
  per-read timeout never trips.
- ``huge_literal``: answers a header FETCH with a ``BODY[HEADER]`` literal of ``literal_bytes`` (generated
  while sending, never held in memory) while ``RFC822.SIZE`` claims ``claimed_size``; with
  ``literal_at="list"`` the folder name in the LIST answer is that literal instead.
- ``untagged_flood``: on a command named ``flood_at`` sends ``flood_line`` untagged lines, endlessly, and
  never the tagged answer.
- ``silent_after_login``: accepts the login, then reads commands and never answers again.

``after`` lets that many header FETCHes (or ``flood_at`` commands) be answered normally first, so a sync
commits some batches before the server turns.

The script is read when a connection is accepted, so a test may change ``server.script`` between syncs.
Every connection runs in its own thread; ``stop()`` closes them all, whatever they were doing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from tests.support.dovecot import _make_cert
from tests.support.mail import make_message

BEHAVIOURS = ("normal", "drip", "huge_literal", "untagged_flood", "silent_after_login")
CAPABILITIES = b"IMAP4rev1 LITERAL+ UIDPLUS ENABLE"
_CHUNK = 64 * 1024
_COMMAND = re.compile(rb"^(\S+) (?:UID )?([A-Za-z]+)(?: (.*))?$", re.S)


@dataclass(frozen=True)
class Script:
    """What the server does: the behaviour and its knobs (see the module docstring)."""

    behaviour: str = "normal"
    drip_at: str = "greeting"  # "greeting", "fetch" or "list"
    drip_interval: float = 1.0
    literal_bytes: int = 200 * 1024 * 1024
    claimed_size: int = 500
    literal_at: str = "fetch"  # "fetch" (BODY[HEADER]) or "list" (a folder name)
    flood_at: str = "fetch"  # a command name in lower case: "login", "list", "examine", "fetch", ...
    after: int = 0  # header FETCHes (or flood_at commands) answered normally before the hostile part
    flood_line: bytes = b"* 1 EXISTS"
    messages: int = 3

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {self.behaviour!r}; one of {', '.join(BEHAVIOURS)}")

    def but(self, **changes: object) -> Script:
        """A copy with some knobs changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass
class Stats:
    """What the server saw, for assertions: connections accepted and commands by name."""

    connections: int = 0
    commands: list[str] = field(default_factory=list)
    hostile_started: threading.Event = field(default_factory=threading.Event)  # the bad part has begun
    sent_bytes: int = 0  # of the hostile part (drip bytes, literal bytes, flood bytes)


class _Closed(Exception):
    """The client went away or the server is stopping."""


class HostileImapServer:
    """The server: ``host``, ``port``, ``cafile`` for the client; ``script`` is what the next connection does."""

    def __init__(self, script: Script | None = None, *, workdir: Path | None = None, host: str = "127.0.0.1") -> None:
        self.script = script or Script()
        self.stats = Stats()
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="hostile-imap-")
        base = Path(workdir) if workdir is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        base.mkdir(parents=True, exist_ok=True)
        self.cafile, key = _make_cert(base)
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(self.cafile, key)
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.1)  # accept() wakes up to see stop(); closing the socket would not wake it
        self.host, self.port = host, int(self._listener.getsockname()[1])
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="hostile-imap-accept", daemon=True)
        self._acceptor.start()

    # ---- for the client --------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's certificate only."""
        return ssl.create_default_context(cafile=str(self.cafile))

    def messages(self) -> list[bytes]:
        """The mailbox of the ``normal`` part: UID n is message n - 1."""
        when = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.UTC)
        return [
            make_message(subject=f"hostile test {n}", message_id=f"<hostile-{n}@example.com>", date=when)
            for n in range(1, self.script.messages + 1)
        ]

    # ---- lifecycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop accepting and close every connection (their threads end at once)."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in [self._acceptor, *self._threads]:
            thread.join(timeout=5)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> HostileImapServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the connections -------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                raw, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.add(raw)
                self.stats.connections += 1
            thread = threading.Thread(target=self._serve, args=(raw, self.script), name="hostile-imap", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _serve(self, raw: socket.socket, script: Script) -> None:
        try:
            raw.settimeout(None)
            conn = self._tls.wrap_socket(raw, server_side=True)
            _Session(self, conn, script).run()
        except (_Closed, OSError, ssl.SSLError, ValueError):
            pass
        finally:
            with self._lock:
                self._conns.discard(raw)
            with contextlib.suppress(OSError):
                raw.close()


class _Session:
    """One client connection, following the script."""

    def __init__(self, server: HostileImapServer, conn: ssl.SSLSocket, script: Script) -> None:
        self.server = server
        self.conn = conn
        self.script = script
        self.file = conn.makefile("rb")
        self.messages = server.messages()
        self.silent = False
        self.lied = False
        self.seen: dict[str, int] = {}  # header FETCHes and flood_at commands so far

    # ---- sending ---------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.server._stopping.is_set():
            raise _Closed
        self.conn.sendall(data)

    def line(self, text: bytes) -> None:
        self.send(text + b"\r\n")

    def pause(self, seconds: float) -> None:
        if self.server._stopping.wait(seconds):
            raise _Closed

    def turn(self, what: str) -> bool:
        """Whether this header FETCH (or flood_at command) is the one where the server turns hostile."""
        self.seen[what] = self.seen.get(what, 0) + 1
        return self.seen[what] == self.script.after + 1

    def hostile(self, sent: int) -> None:
        self.server.stats.hostile_started.set()
        self.server.stats.sent_bytes += sent

    # ---- the behaviours --------------------------------------------------------------------------

    def drip(self, head: bytes) -> None:
        """``head`` at once, then a byte per interval, forever."""
        self.send(head)
        while True:
            self.send(b"x")
            self.hostile(1)
            self.pause(self.script.drip_interval)

    def flood(self) -> None:
        chunk = (self.script.flood_line + b"\r\n") * (_CHUNK // (len(self.script.flood_line) + 2))
        while True:
            self.send(chunk)
            self.hostile(len(chunk))

    # ---- the conversation ------------------------------------------------------------------------

    def run(self) -> None:
        s = self.script
        if s.behaviour == "drip" and s.drip_at == "greeting":
            self.drip(b"* OK ")
        self.line(b"* OK [CAPABILITY " + CAPABILITIES + b"] hostile test server ready")
        while True:
            raw = self.file.readline(1 << 20)
            if not raw:
                raise _Closed
            m = _COMMAND.match(raw.rstrip(b"\r\n"))
            if m is None:
                self.line(b"* BAD what?")
                continue
            tag, name, args = m.group(1), m.group(2).lower().decode(), m.group(3) or b""
            self.server.stats.commands.append(name)
            if self.silent:
                continue
            if s.behaviour == "untagged_flood" and name == s.flood_at and self.turn("flood"):
                self.flood()
            self.command(tag, name, args)
            if name == "logout":
                return
            if s.behaviour == "silent_after_login" and name == "login":
                self.silent = True

    def command(self, tag: bytes, name: str, args: bytes) -> None:
        n = len(self.messages)
        if name == "capability":
            self.line(b"* CAPABILITY " + CAPABILITIES)
        elif name == "login":
            pass
        elif name == "list":
            if self.script.behaviour == "drip" and self.script.drip_at == "list":
                self.drip(b'* LIST (\\HasNoChildren) "/" "INB')
            if self.script.behaviour == "huge_literal" and self.script.literal_at == "list":
                self.send(b'* LIST (\\HasNoChildren) "/" {%d}\r\n' % self.script.literal_bytes)
                self.filler(self.script.literal_bytes)
                self.send(b"\r\n")
            self.line(b'* LIST (\\HasNoChildren) "/" INBOX')
        elif name == "status":
            self.line(b"* STATUS INBOX (MESSAGES %d UIDNEXT %d UIDVALIDITY 1)" % (n, n + 1))
        elif name in ("select", "examine"):
            self.line(b"* %d EXISTS" % n)
            self.line(b"* 0 RECENT")
            self.line(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)")
            self.line(b"* OK [UIDVALIDITY 1] UIDs valid")
            self.line(b"* OK [UIDNEXT %d] next UID" % (n + 1))
            ro = b"[READ-ONLY] " if name == "examine" else b"[READ-WRITE] "
            self.line(tag + b" OK " + ro + name.upper().encode() + b" completed")
            return
        elif name == "search":
            found = _uids_in(args, n)
            self.line(b"* SEARCH" + b"".join(b" %d" % u for u in found))
        elif name == "fetch":
            self.fetch(args)
        elif name == "logout":
            self.line(b"* BYE bye")
        elif name not in ("noop", "enable", "check"):
            self.line(tag + b" BAD unknown command")
            return
        self.line(tag + b" OK " + name.upper().encode() + b" completed")

    def fetch(self, args: bytes) -> None:
        s = self.script
        uid_set, _, items_text = args.partition(b" ")
        items = re.findall(rb"[A-Z0-9.]+(?:\[[^\]]*\])?", items_text.upper())
        header_fetch = b"BODY.PEEK[HEADER]" in items
        turning = header_fetch and self.turn("header fetch")
        for uid in _uid_set(uid_set, len(self.messages)):
            raw = self.messages[uid - 1]
            parts = [b"UID %d" % uid]
            head, _, body = raw.partition(b"\r\n\r\n")
            header = head + b"\r\n\r\n"
            for item in items:
                if item == b"RFC822.SIZE":
                    size = s.claimed_size if s.behaviour == "huge_literal" else len(raw)
                    parts.append(b"RFC822.SIZE %d" % size)
                elif item == b"INTERNALDATE":
                    parts.append(b'INTERNALDATE "01-Nov-2026 10:00:00 +0000"')
                elif item == b"FLAGS":
                    parts.append(b"FLAGS ()")
                elif item == b"BODYSTRUCTURE":
                    lines = body.count(b"\n") + 1
                    parts.append(
                        b'BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" %d %d NIL NIL NIL NIL)'
                        % (len(body), lines)
                    )
                elif item.startswith(b"BODY.PEEK[") or item.startswith(b"BODY["):
                    section = item[item.index(b"[") + 1 : -1]
                    data = {b"HEADER": header, b"": raw, b"1": body, b"TEXT": body}.get(section, b"")
                    parts.append(b"BODY[%s] {%d}\r\n%s" % (section, len(data), data))
            if turning and s.behaviour == "drip" and s.drip_at == "fetch":
                self.drip(b"* %d FETCH (UID %d RFC822.SIZE 500 BODY[HEADER] {4000}\r\nSubject: " % (uid, uid))
            if turning and s.behaviour == "huge_literal" and s.literal_at == "fetch" and not self.lied:
                self.lied = True  # the first message of the answer only: the others stay ordinary
                self.huge_literal(uid, parts)
                continue
            self.send(b"* %d FETCH (%s)\r\n" % (uid, b" ".join(parts)))

    def huge_literal(self, uid: int, parts: list[bytes]) -> None:
        """The header literal, ``literal_bytes`` long: header lines made up while sending."""
        size = self.script.literal_bytes
        kept = [p for p in parts if not p.startswith(b"BODY[HEADER]")]
        self.send(b"* %d FETCH (%s BODY[HEADER] {%d}\r\n" % (uid, b" ".join(kept), size))
        self.filler(size - 2)
        self.send(b"\r\n)\r\n")

    def filler(self, size: int) -> None:
        """``size`` bytes of header lines, made up while sending."""
        line = b"X-Filler: " + b"y" * 100 + b"\r\n"
        chunk = line * (_CHUNK // len(line))
        while size > 0:
            piece = chunk[:size]
            self.send(piece)
            self.hostile(len(piece))
            size -= len(piece)


def _uid_set(text: bytes, top: int) -> list[int]:
    """The UIDs of a sequence set ("3,1:2", "5:*") that exist (1..top)."""
    out: list[int] = []
    for part in text.split(b","):
        lo, _, hi = part.partition(b":")
        first = top if lo == b"*" else int(lo)
        last = first if not hi else top if hi == b"*" else int(hi)
        first, last = max(1, min(first, last)), min(top, max(first, last))
        out += [u for u in range(first, last + 1) if u not in out]
    return out


def _uids_in(criteria: bytes, top: int) -> list[int]:
    """UID SEARCH: the UIDs named by a ``UID set`` criterion (every other criterion is ignored)."""
    m = re.search(rb"UID ([0-9:*,]+)", criteria.upper())
    return sorted(_uid_set(m.group(1), top)) if m else list(range(1, top + 1))
