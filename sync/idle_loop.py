"""One thread that keeps many IMAP connections in IDLE (RFC 2177) with a selector, and reports what they say.

The watcher (`sync/idle.py`) logs in and selects INBOX elsewhere, then hands the socket over; from then on this
thread alone reads and writes it, non-blocking: it sends IDLE, waits for the continuation, notices untagged
EXISTS / EXPUNGE / FETCH / RECENT (a change: `on_change`), ends IDLE with DONE every ``idle_seconds`` and
starts it again, and reports a connection that ends (`on_end`). A server is not trusted: a line longer than
64 KiB, a literal above 1 MiB, a flood of responses, or a reply that does not come within ``timeout`` ends
the connection; what is buffered per connection stays below those caps.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024  # an IDLE notice is a few dozen bytes; a FETCH of flags a few hundred
MAX_LITERAL = 1024 * 1024  # skipped without being kept, but a server sending more is misbehaving
MAX_RESPONSES = 10_000  # per IDLE round: far above any real mailbox's burst, far below a flood
TRIGGER_GAP = 1.0  # seconds: changes closer together than this make one trigger (at the end of the gap)
READS_PER_TURN = 16  # recv calls for one connection before the others get their turn
QUICK_END, QUICK_ENDS = 1.0, 10  # an IDLE the server ends within 1 s, more than 10 times in a row: misbehaving
CHANGES = frozenset({b"EXISTS", b"EXPUNGE", b"FETCH", b"RECENT"})
_LITERAL = re.compile(rb"\{(\d{1,20})\+?\}\r?\n$")

# Connection states
IDLE_SENT = "idle_sent"  # IDLE sent, waiting for "+"
IDLING = "idling"
DONE_SENT = "done_sent"  # DONE sent, waiting for the tagged completion


@dataclass
class Handover:
    """A logged-in connection with INBOX selected, given to the loop."""

    account_id: int
    generation: int  # the watch's generation when its login started: a stale handover is closed
    sock: socket.socket  # non-blocking from now on (an ssl.SSLSocket for TLS)
    leftover: bytes = b""  # bytes imaplib had already read past the last completion
    expires_at: float | None = None  # wall-clock expiry of the access token it logged in with (OAuth)
    keep: Any = None  # the client object, kept alive while the socket lives


@dataclass(frozen=True)
class Ended:
    """Why a connection ended."""

    reason: str
    no_idle: bool = False  # the server refused IDLE
    relogin: bool = False  # ended on purpose (expired access token): log in again at once
    lived: float = 0.0  # seconds since the handover


@dataclass(eq=False)
class _Conn:
    h: Handover
    started: float
    state: str = IDLE_SENT
    tag: bytes = b""
    tags: int = 0
    inbuf: bytearray = field(default_factory=bytearray)
    skip: int = 0  # bytes of a literal still to skip
    outbuf: bytes = b""
    responses: int = 0  # in this IDLE round
    reply_by: float | None = None  # monotonic: the server must answer by then
    renew_at: float | None = None  # monotonic: end this IDLE (DONE) and start another
    change_pending: bool = False
    next_trigger: float = 0.0
    writing: bool = False
    idles: int = 0  # IDLE commands sent on this connection
    idle_started: float = 0.0  # monotonic: when the current IDLE was sent
    quick_ends: int = 0  # IDLEs in a row the server ended itself within a second


class IdleLoop:
    """The selector thread: owns every handed-over connection until it ends or the loop stops."""

    def __init__(
        self,
        *,
        idle_seconds: float,
        timeout: float,
        on_change: Callable[[int], None],
        on_idling: Callable[[int, int, bool], None],
        on_end: Callable[[int, int, Ended], None],
        is_current: Callable[[int, int], bool],
        on_count: Callable[[int], None] | None = None,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.timeout = timeout
        self._on_change = on_change
        self._on_idling = on_idling  # (account, generation, first IDLE of this connection)
        self._on_end = on_end
        self._is_current = is_current
        self._on_count = on_count
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._conns: dict[int, _Conn] = {}
        self._again: set[_Conn] = set()  # read again without waiting (TLS may hold decrypted bytes)
        self._thread = threading.Thread(target=self._run, name="idle-loop", daemon=True)
        self._stopping = False
        self._idling_count = -1
        self.idle_commands = 0  # IDLE commands sent (every connection), for tests and doctor

    # ---- from other threads ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def add(self, handover: Handover) -> None:
        """Take over a logged-in connection."""
        self._send("add", handover)

    def remove(self, account_id: int) -> None:
        """Close an account's connection (LOGOUT, best effort), without reporting it as ended."""
        self._send("remove", account_id)

    def stop(self, grace: float = 1.0) -> None:
        """End IDLE and log out of every connection (waiting at most ``grace`` seconds for answers), then close."""
        self._send("stop", grace)
        self._thread.join(grace + 5.0)

    def states(self) -> dict[int, str]:
        """Each connection's state (a snapshot, for tests and doctor)."""
        return {a: c.state for a, c in list(self._conns.items())}

    def _send(self, what: str, arg: Any) -> None:
        self._commands.put((what, arg))
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # ---- the thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                timeout = 0.0 if self._again else self._next_timeout()
                for key, mask in self._sel.select(timeout):
                    conn = key.data
                    if conn is None:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                        continue
                    if mask & selectors.EVENT_WRITE and conn.writing:
                        self._flush(conn)
                    if mask & selectors.EVENT_READ and conn.h.account_id in self._conns:
                        self._read(conn)
                for conn in list(self._again):
                    self._again.discard(conn)
                    if self._conns.get(conn.h.account_id) is conn:
                        self._read(conn)
                self._run_commands()
                self._run_timers()
                self._count()
        except Exception:
            log.exception("the IDLE loop crashed; every watch ends")
            for conn in list(self._conns.values()):
                self._end(conn, Ended("the IDLE loop stopped"))
        finally:
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _next_timeout(self) -> float:
        now = time.monotonic()
        soonest = now + 5.0
        for conn in self._conns.values():
            for at in (conn.reply_by, conn.renew_at, conn.next_trigger if conn.change_pending else None):
                if at is not None and at < soonest:
                    soonest = at
        return max(0.0, soonest - now)

    def _run_commands(self) -> None:
        while True:
            try:
                what, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            if what == "add":
                self._add(arg)
            elif what == "remove":
                conn = self._conns.get(arg)
                if conn is not None:
                    self._close(conn, logout=True)
            elif what == "stop":
                self._shutdown(arg)
                self._stopping = True
                return

    def _add(self, h: Handover) -> None:
        old = self._conns.get(h.account_id)
        if old is not None:
            self._close(old, logout=True)
        if not self._is_current(h.account_id, h.generation):
            # The watch was dropped or restarted while this login was under way.
            _close_socket(h.sock, b"Z LOGOUT\r\n")
            return
        conn = _Conn(h, time.monotonic())
        self._conns[h.account_id] = conn
        self._sel.register(h.sock, selectors.EVENT_READ, conn)
        if h.leftover and not self._feed(conn, h.leftover):
            return
        self._fire_if_due(conn)
        self._start_idle(conn)
        self._again.add(conn)

    # ---- the IMAP side ------------------------------------------------------------------------------

    def _start_idle(self, conn: _Conn) -> None:
        conn.tags += 1
        conn.tag = b"I%d" % conn.tags
        conn.state = IDLE_SENT
        conn.responses = 0
        conn.renew_at = None
        conn.idle_started = time.monotonic()
        conn.reply_by = conn.idle_started + self.timeout
        conn.idles += 1
        self.idle_commands += 1
        self._write(conn, conn.tag + b" IDLE\r\n")

    def _renew(self, conn: _Conn) -> None:
        """The IDLE ran its time: end it (DONE) and start another once the server completes it."""
        expires = conn.h.expires_at
        if expires is not None and time.time() >= expires:
            # Logged in with an access token that has expired since: some servers end such sessions on
            # their own; logging in again with a fresh token is cleaner than waiting to be cut.
            self._close(conn, logout=True)
            self._on_end(conn.h.account_id, conn.h.generation, Ended("access token expired", relogin=True))
            return
        conn.state = DONE_SENT
        conn.renew_at = None
        conn.reply_by = time.monotonic() + self.timeout
        self._write(conn, b"DONE\r\n")

    def _line(self, conn: _Conn, line: bytes) -> bool:
        """Act on one response line; False when the connection ended."""
        literal = _LITERAL.search(line)
        if literal:
            size = int(literal.group(1))
            if size > MAX_LITERAL:
                return self._fail(conn, f"the server sent a {size}-byte item while idling")
            conn.skip = size
        conn.responses += 1
        if conn.responses > MAX_RESPONSES:
            return self._fail(conn, f"the server sent more than {MAX_RESPONSES:,} responses in one IDLE")
        if line.startswith(b"+"):
            if conn.state == IDLE_SENT:
                conn.state = IDLING
                conn.reply_by = None
                conn.renew_at = time.monotonic() + self.idle_seconds
                self._on_idling(conn.h.account_id, conn.h.generation, conn.idles == 1)
            return True
        if line.startswith(b"* "):
            words = line[2:].split(None, 2)
            if len(words) >= 2 and words[0].isdigit() and words[1].rstrip().upper() in CHANGES:
                self._changed(conn)
            elif words and words[0].rstrip().upper() == b"BYE":
                return self._fail(conn, "the server closed the session (BYE)")
            return True
        if conn.tag and line.startswith(conn.tag + b" "):
            words = line.split(None, 2)
            status = words[1].upper() if len(words) > 1 else b""
            if status != b"OK":
                self._close(conn, logout=True)
                self._on_end(conn.h.account_id, conn.h.generation, Ended("the server refused IDLE", no_idle=True))
                return False
            if conn.state != DONE_SENT:
                # The server ended the IDLE itself (some do after a few minutes): fine, unless it does so at
                # once, again and again, which would keep this thread busy re-issuing IDLE for it.
                quick = time.monotonic() - conn.idle_started < QUICK_END
                conn.quick_ends = conn.quick_ends + 1 if quick else 0
                if conn.quick_ends > QUICK_ENDS:
                    return self._fail(conn, f"the server ended IDLE at once {QUICK_ENDS + 1} times in a row")
            # Our DONE was answered, or the server ended the IDLE itself: start the next one.
            self._start_idle(conn)
        return True

    def _changed(self, conn: _Conn) -> None:
        # Fired once the bytes at hand are read (EXISTS and RECENT of one delivery make one trigger).
        conn.change_pending = True

    def _fire_if_due(self, conn: _Conn) -> None:
        now = time.monotonic()
        if conn.change_pending and now >= conn.next_trigger and self._conns.get(conn.h.account_id) is conn:
            self._fire(conn, now)

    def _fire(self, conn: _Conn, now: float) -> None:
        conn.change_pending = False
        conn.next_trigger = now + TRIGGER_GAP
        try:
            self._on_change(conn.h.account_id)
        except Exception:
            log.exception("account %s: the change callback failed", conn.h.account_id)

    def _run_timers(self) -> None:
        now = time.monotonic()
        for conn in list(self._conns.values()):
            if conn.reply_by is not None and now >= conn.reply_by:
                self._fail(conn, f"the server did not answer within {self.timeout:.0f} s")
            elif conn.renew_at is not None and now >= conn.renew_at:
                self._renew(conn)
            elif conn.change_pending and now >= conn.next_trigger:
                self._fire(conn, now)

    # ---- bytes ----------------------------------------------------------------------------------------

    def _read(self, conn: _Conn) -> None:
        sock = conn.h.sock
        for _ in range(READS_PER_TURN):
            try:
                data = sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
                break  # all read
            except OSError as exc:
                self._fail(conn, f"the connection was lost ({exc.__class__.__name__})")
                return
            if not data:
                self._fail(conn, "the server closed the connection")
                return
            if not self._feed(conn, data):
                return
        else:
            self._again.add(conn)  # more may be waiting, some of it inside TLS where select() cannot see it
        self._fire_if_due(conn)

    def _feed(self, conn: _Conn, data: bytes) -> bool:
        i, n = 0, len(data)
        while i < n:
            if conn.skip:
                step = min(conn.skip, n - i)
                conn.skip -= step
                i += step
                continue
            j = data.find(b"\n", i)
            if j < 0:
                conn.inbuf += data[i:]
                if len(conn.inbuf) > MAX_LINE:
                    return self._fail(conn, f"the server sent a line longer than {MAX_LINE // 1024} KiB")
                return True
            if conn.inbuf:
                conn.inbuf += data[i : j + 1]
                line = bytes(conn.inbuf)
                conn.inbuf.clear()
            else:
                line = data[i : j + 1]
            i = j + 1
            if len(line) > MAX_LINE:
                return self._fail(conn, f"the server sent a line longer than {MAX_LINE // 1024} KiB")
            if not self._line(conn, line):
                return False
        return True

    def _write(self, conn: _Conn, data: bytes) -> None:
        conn.outbuf += data
        self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        try:
            while conn.outbuf:
                sent = conn.h.sock.send(conn.outbuf)
                conn.outbuf = conn.outbuf[sent:]
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._fail(conn, f"the connection was lost ({exc.__class__.__name__})")
            return
        want = bool(conn.outbuf)
        if want != conn.writing:
            conn.writing = want
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            self._sel.modify(conn.h.sock, events, conn)

    # ---- endings --------------------------------------------------------------------------------------

    def _fail(self, conn: _Conn, reason: str) -> bool:
        self._close(conn, logout=False)
        self._on_end(conn.h.account_id, conn.h.generation, Ended(reason, lived=time.monotonic() - conn.started))
        return False

    def _end(self, conn: _Conn, ended: Ended) -> None:
        self._close(conn, logout=False)
        self._on_end(conn.h.account_id, conn.h.generation, ended)

    def _close(self, conn: _Conn, *, logout: bool) -> None:
        if self._conns.get(conn.h.account_id) is conn:
            del self._conns[conn.h.account_id]
        self._again.discard(conn)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(conn.h.sock)
        farewell = b""
        if logout:
            farewell = (b"DONE\r\n" if conn.state == IDLING else b"") + b"Z LOGOUT\r\n"
        _close_socket(conn.h.sock, farewell)

    def _shutdown(self, grace: float) -> None:
        """DONE and LOGOUT to every connection, read until each closes or ``grace`` passes, then close all."""
        conns = list(self._conns.values())
        for conn in conns:
            self._again.discard(conn)
            conn.reply_by = conn.renew_at = None
            self._write(conn, (b"DONE\r\n" if conn.state == IDLING else b"") + b"Z LOGOUT\r\n")
        open_ = {c for c in conns if c.h.account_id in self._conns}
        until = time.monotonic() + grace
        while open_ and time.monotonic() < until:
            for key, _mask in self._sel.select(max(0.0, until - time.monotonic())):
                conn = key.data
                if conn is None or conn not in open_:
                    continue
                if _drained(conn.h.sock):
                    open_.discard(conn)
        for conn in conns:
            if conn.h.account_id in self._conns:
                self._close(conn, logout=False)
        self._count()

    def _count(self) -> None:
        idling = sum(1 for c in self._conns.values() if c.state != IDLE_SENT or c.idles > 1)
        if idling != self._idling_count:
            self._idling_count = idling
            if self._on_count is not None:
                self._on_count(idling)


def _drained(sock: socket.socket) -> bool:
    """Read and drop what the server sent; True once it closed (or the connection broke)."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def _close_socket(sock: socket.socket, farewell: bytes = b"") -> None:
    """Send ``farewell`` if the socket takes it at once, then close (never blocks, never raises)."""
    if farewell:
        with contextlib.suppress(OSError, ValueError):
            sock.send(farewell)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
