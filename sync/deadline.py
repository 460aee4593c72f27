"""Overall deadlines for network conversations: when one passes, its sockets are shut down.

A per-read timeout never trips against a server that drips one byte every few seconds, so every
connection test and every sync slice also runs under a `Deadline`. One watchdog thread serves every
deadline of the process; at expiry it shuts the registered sockets down, which wakes any thread
blocked in recv() at once (with EOF or an error) wherever it is: TLS handshake, greeting, a literal.
`expire_all()` does the same for every live deadline, so SIGTERM never waits for a stuck server.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar

log = logging.getLogger(__name__)


class Deadline:
    """A point in time after which the sockets registered with it are shut down."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._expired = False
        self._done = False

    @property
    def expired(self) -> bool:
        """True once the deadline passed (or the process is stopping) and the sockets were shut down."""
        return self._expired

    def remaining(self) -> float:
        """Seconds left, never below zero."""
        return max(0.0, self.expires_at - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock`'s connection down when the deadline passes (at once if it already has).

        Pass the plain TCP socket before any TLS wrap: a duplicate of its descriptor is kept, so the
        shutdown reaches the connection whatever wraps it later (TLS, STARTTLS), and a descriptor
        number reused by another connection after this one closed is never touched.
        """
        dup = sock.dup()
        with self._lock:
            if not self._expired and not self._done:
                self._sockets.append(dup)
                return
            expired = self._expired
        if expired:
            _shutdown(dup)
        dup.close()

    def expire(self) -> None:
        """End now: shut every registered socket down."""
        with self._lock:
            if self._expired or self._done:
                return
            self._expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shutdown(sock)
            sock.close()

    def finish(self) -> None:
        """The conversation ended (in time or not): release the duplicates."""
        with self._lock:
            self._done = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()
        _watchdog.forget(self)


def _shutdown(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that expires deadlines in time order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._live: set[Deadline] = set()
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._cond:
            self._live.add(deadline)
            heapq.heappush(self._heap, (deadline.expires_at, next(self._ids), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="deadline-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()

    def forget(self, deadline: Deadline) -> None:
        with self._cond:
            self._live.discard(deadline)

    def expire_all(self) -> int:
        with self._cond:
            live = list(self._live)
        for deadline in live:
            deadline.expire()
        return len(live)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2] not in self._live:
                    heapq.heappop(self._heap)  # finished in time: drop lazily
                if not self._heap:
                    self._cond.wait(60.0)
                    continue
                due, _, deadline = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._live.discard(deadline)
            log.debug("deadline of %.0f s passed; closing its connection", deadline.seconds)
            deadline.expire()


_watchdog = _Watchdog()
_current: ContextVar[Deadline | None] = ContextVar("emailsync_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Run the block under an overall deadline; connections opened inside register with it."""
    dl = Deadline(seconds)
    _watchdog.add(dl)
    reset = _current.set(dl)
    try:
        yield dl
    finally:
        _current.reset(reset)
        dl.finish()


def current_deadline() -> Deadline | None:
    """The deadline the calling code runs under, if any."""
    return _current.get()


def expire_all() -> int:
    """Shut down the connections of every live deadline (process shutdown); return how many."""
    return _watchdog.expire_all()
