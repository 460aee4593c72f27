"""The IDLE selector loop against a scripted server on a socket pair: IDLE, changes, re-IDLE, a hostile server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from sync.idle_loop import MAX_LINE, Ended, Handover, IdleLoop


@dataclass
class Calls:
    """What the loop reported."""

    changes: list[int] = field(default_factory=list)
    idling: list[tuple[int, bool]] = field(default_factory=list)
    ended: list[tuple[int, Ended]] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    current: set[tuple[int, int]] = field(default_factory=lambda: {(1, 0), (2, 0)})


def wait_for(check: Callable[[], object], timeout: float = 10.0) -> None:
    until = time.monotonic() + timeout
    while not check():
        if time.monotonic() > until:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class Server:
    """The server end of a socket pair, read line by line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(10)
        self.buf = b""

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise EOFError
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def closed(self) -> bool:
        try:
            while True:
                data = self.sock.recv(4096)
                if not data:
                    return True
                self.buf += data
        except OSError:
            return True


@pytest.fixture
def loop() -> Iterator[tuple[IdleLoop, Calls]]:
    calls = Calls()
    lp = IdleLoop(
        idle_seconds=0.5,
        timeout=2.0,
        on_change=calls.changes.append,
        on_idling=lambda a, g, first: calls.idling.append((a, first)),
        on_end=lambda a, g, ended: calls.ended.append((a, ended)),
        is_current=lambda a, g: (a, g) in calls.current,
        on_count=calls.counts.append,
    )
    lp.start()
    yield lp, calls
    lp.stop(grace=0.2)


def handover(lp: IdleLoop, account: int = 1, leftover: bytes = b"", generation: int = 0) -> Server:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    lp.add(Handover(account, generation, ours, leftover))
    return Server(theirs)


def test_idle_change_and_reissue(loop):
    lp, calls = loop
    server = handover(lp)
    assert server.line() == b"I1 IDLE\r\n"
    server.send(b"+ idling\r\n")
    wait_for(lambda: calls.idling == [(1, True)])
    # One delivery: EXISTS and RECENT together make one trigger.
    server.send(b"* 4 EXISTS\r\n* 1 RECENT\r\n")
    wait_for(lambda: calls.changes == [1])
    time.sleep(0.2)
    assert calls.changes == [1]
    # A keepalive is not a change.
    server.send(b"* OK Still here\r\n")
    # After idle_seconds the loop ends the IDLE and, once the server completes it, starts another.
    assert server.line() == b"DONE\r\n"
    server.send(b"I1 OK Idle completed.\r\n")
    assert server.line() == b"I2 IDLE\r\n"
    server.send(b"+ idling\r\n")
    wait_for(lambda: len(calls.idling) == 2)
    assert calls.idling[1] == (1, False)
    # A change soon after the last one waits for the end of the gap, then triggers once.
    server.send(b"* 3 EXPUNGE\r\n")
    server.send(b"* 2 FETCH (FLAGS (\\Seen))\r\n")
    wait_for(lambda: calls.changes == [1, 1])
    assert calls.ended == []
    assert lp.idle_commands == 2


def test_leftover_bytes_are_read_first(loop):
    lp, calls = loop
    server = handover(lp, leftover=b"* 9 EXISTS\r\n")
    assert server.line() == b"I1 IDLE\r\n"
    wait_for(lambda: calls.changes == [1])


def test_silent_server_ends_the_connection(loop):
    lp, calls = loop
    server = handover(lp)
    assert server.line() == b"I1 IDLE\r\n"  # and never a "+"
    wait_for(lambda: calls.ended, timeout=5)
    assert "did not answer" in calls.ended[0][1].reason
    assert server.closed()


def test_done_never_answered_ends_the_connection(loop):
    lp, calls = loop
    server = handover(lp)
    server.line()
    server.send(b"+ idling\r\n")
    assert server.line() == b"DONE\r\n"
    wait_for(lambda: calls.ended, timeout=5)
    assert "did not answer" in calls.ended[0][1].reason


@pytest.mark.parametrize(
    ("send", "reason"),
    [
        (b"* 1 EXISTS " + b"x" * (MAX_LINE + 10), "longer than"),  # no end of line, ever
        (b"* 1 FETCH (BODY[] {99999999}\r\n", "item while idling"),
        (b"* BYE shutting down\r\n", "BYE"),
        (b"* 1 EXISTS\r\n" * 10_001, "more than 10,000 responses"),
    ],
)
def test_hostile_or_closing_server(loop, send, reason):
    lp, calls = loop
    server = handover(lp)
    server.line()
    server.send(b"+ idling\r\n")
    threading.Thread(target=lambda: _send_quietly(server, send), daemon=True).start()
    wait_for(lambda: calls.ended)
    assert reason in calls.ended[0][1].reason
    assert not calls.ended[0][1].no_idle


def _send_quietly(server: Server, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the loop hangs up mid-flood
        server.send(data)


def test_a_literal_is_skipped_without_being_kept(loop):
    lp, calls = loop
    server = handover(lp)
    server.line()
    server.send(b"+ idling\r\n")
    server.send(b"* 1 FETCH (X {20}\r\n" + b"* 99 EXISTS\r\n-------" + b")\r\n")
    time.sleep(1.5)  # past the trigger gap: a second change would have fired by now
    assert calls.changes == [1]  # the FETCH; the EXISTS inside the literal is data, not a response
    assert calls.ended == []


def test_idle_refused(loop):
    lp, calls = loop
    server = handover(lp)
    server.line()
    server.send(b"I1 BAD Unknown command\r\n")
    wait_for(lambda: calls.ended)
    assert calls.ended[0][1].no_idle
    assert server.line() == b"Z LOGOUT\r\n"


def test_server_closing_is_reported(loop):
    lp, calls = loop
    server = handover(lp)
    server.line()
    server.send(b"+ idling\r\n")
    wait_for(lambda: calls.idling)
    server.sock.close()
    wait_for(lambda: calls.ended)
    assert "closed the connection" in calls.ended[0][1].reason


def test_stale_handover_is_closed_not_watched(loop):
    lp, calls = loop
    server = handover(lp, account=1, generation=7)  # the watch moved on to another generation
    assert server.line() == b"Z LOGOUT\r\n"
    assert server.closed()
    assert calls.idling == [] and calls.ended == []


def test_remove_and_stop_log_out(loop):
    lp, calls = loop
    one, two = handover(lp, 1), handover(lp, 2)
    for server in (one, two):
        server.line()
        server.send(b"+ idling\r\n")
    wait_for(lambda: len(calls.idling) == 2)
    wait_for(lambda: calls.counts[-1] == 2)
    lp.remove(1)
    assert one.line() == b"DONE\r\n"
    assert one.line() == b"Z LOGOUT\r\n"
    assert one.closed()
    started = time.monotonic()
    lp.stop(grace=0.5)
    assert two.line() == b"DONE\r\n"
    assert two.line() == b"Z LOGOUT\r\n"
    assert time.monotonic() - started < 3
    assert calls.ended == []  # removals and stops are not drops
    assert calls.counts[-1] == 0


def test_a_server_that_ends_every_idle_at_once_is_dropped(loop):
    lp, calls = loop
    server = handover(lp)
    for n in range(1, 12):
        assert server.line() == b"I%d IDLE\r\n" % n
        server.send(b"+ idling\r\nI%d OK Idle completed.\r\n" % n)
    wait_for(lambda: calls.ended)
    assert "ended IDLE at once 11 times" in calls.ended[0][1].reason


def test_a_server_that_ends_idle_after_a_while_is_followed(loop):
    lp, calls = loop
    lp.idle_seconds = 60.0  # no DONE from us during this test
    server = handover(lp)
    for n in range(1, 4):
        assert server.line() == b"I%d IDLE\r\n" % n
        server.send(b"+ idling\r\n")
        time.sleep(1.1)
        server.send(b"I%d OK Idle timed out.\r\n" % n)
    assert server.line() == b"I4 IDLE\r\n"
    assert calls.ended == []
