"""Limits on what an IMAP server may make us read and keep: one literal, and the untagged responses of a command.

imaplib believes the server: a ``{N}`` announcement makes it read N bytes into memory, whatever N is, and
untagged responses pile up in ``untagged_responses`` until someone pops them (some kinds, like EXISTS, never
are). A hostile or broken server can so make the process as large as it likes. `LimitedIMAP4` checks a
literal's size as soon as its announcement is read, before reading a byte of it, and counts the untagged
responses (and their bytes) of each command; past a limit it drops the connection (it is out of step with
the server from then on) and raises `ResponseLimitExceeded`, so memory stays bounded whatever the server
sends or claims. Every read of imaplib and imapclient (commands, FETCH pipelines, IDLE aside) goes through
``_get_response``, ``read`` and ``_append_untagged``, which is where the checks sit.
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
from dataclasses import dataclass
from typing import Any

from sync.errors import ResponseLimitExceeded

MB = 1024 * 1024
# Untagged responses of one command: the engine's largest legitimate answers are a FLAGS FETCH of one
# UID window (20,000 lines), a LIST of every folder, and a round of bodies (8 MB, or one message up to the
# size limit) with the next header FETCH held beside it. A flood stops there: memory stays below ~50 MB more.
UNTAGGED_COUNT = 250_000
UNTAGGED_BYTES = 48 * MB
_ENTRY_OVERHEAD = 64  # bytes of Python object per stored response, so a flood of tiny lines counts too


@dataclass(frozen=True)
class ResponseLimits:
    """The most one literal may hold, and how many untagged responses (and bytes) one command may bring."""

    literal_bytes: int = 25 * MB + 25 * MB // 10
    untagged_count: int = UNTAGGED_COUNT
    untagged_bytes: int = UNTAGGED_BYTES

    @classmethod
    def for_messages(cls, max_message_bytes: int, round_bytes: int = 8 * MB) -> ResponseLimits:
        """Limits for a sync that fetches messages up to ``max_message_bytes`` in rounds of ``round_bytes``.

        A literal may exceed the size the server claimed by a margin (10 %, at least 1 MB): some servers
        (Exchange) report RFC822.SIZE as an estimate. One command's answers may hold one such literal on
        top of a round of bodies.
        """
        literal = max_message_bytes + max(MB, max_message_bytes // 10)
        return cls(literal, UNTAGGED_COUNT, max(UNTAGGED_BYTES, literal + round_bytes + 8 * MB))


# A connection test only logs in and LISTs: folder names are short, and even 100,000 folders fit.
CONNECT_LIMITS = ResponseLimits(literal_bytes=1 * MB, untagged_count=100_000, untagged_bytes=8 * MB)


class LimitedIMAP4(imaplib.IMAP4):
    """imaplib's IMAP4 with `ResponseLimits` enforced on every response it reads.

    Set ``response_limits`` before calling ``__init__``: the greeting is read there already.
    """

    response_limits: ResponseLimits = ResponseLimits()
    _count = 0  # untagged responses since the last tagged completion (this command's answers)
    _bytes = 0  # their bytes
    _held = 0  # bytes held in untagged_responses from before (answers not popped yet, or never popped)
    _held_stale = True  # recount _held at the first response of the next command's answers

    def read(self, size: int) -> bytes:
        """Read a literal of ``size`` bytes, unless it is above the limits (checked before reading any of it)."""
        limits = self.response_limits
        if size > limits.literal_bytes:
            self._refuse(
                f"{self._where()} sent a {_size(size)} item, above the {_size(limits.literal_bytes)} limit.",
                "The server is misbehaving; what was synced so far is kept and the sync is tried again later.",
            )
        if self._held_bytes() + self._bytes + size > limits.untagged_bytes:
            self._refuse_flood()
        data: bytes = super().read(size)
        return data

    def _append_untagged(self, typ: str, dat: Any) -> None:
        limits = self.response_limits
        self._count += 1
        self._bytes += _cost(dat)
        if self._count > limits.untagged_count or self._held_bytes() + self._bytes > limits.untagged_bytes:
            self._refuse_flood()
        super()._append_untagged(typ, dat)  # type: ignore[misc]

    def _get_response(self) -> bytes | None:
        resp: bytes | None = super()._get_response()  # type: ignore[misc]
        if resp is not None and resp[:1] not in (b"*", b"+"):
            # A tagged completion: the next command's answers start here. Its caller pops what it wants
            # before reading on (a pipelined FETCH pops later), so what is still held is counted then.
            self._count = self._bytes = 0
            self._held_stale = True
        return resp

    def _held_bytes(self) -> int:
        if self._held_stale:
            self._held = sum(_cost(d) for data in self.untagged_responses.values() for d in data)
            self._held_stale = False
        return self._held

    def _refuse_flood(self) -> None:
        limits = self.response_limits
        self._refuse(
            f"{self._where()} sent more than {limits.untagged_count:,} responses or {_size(limits.untagged_bytes)} "
            "to one command.",
            "The server is misbehaving; what was synced so far is kept and the sync is tried again later.",
        )

    def _refuse(self, message: str, fix: str) -> None:
        # The rest of the refused answer is still on its way: nothing after it can be read in step.
        with contextlib.suppress(OSError, AttributeError):
            self.sock.shutdown(socket.SHUT_RDWR)
        raise ResponseLimitExceeded(message, fix)

    def _where(self) -> str:
        return f"{self.host}:{self.port}"


def _cost(dat: Any) -> int:
    """Bytes a stored response takes (its data, a literal pair, plus the objects around them)."""
    if isinstance(dat, tuple):
        return sum(_cost(d) for d in dat)
    if isinstance(dat, bytes | bytearray):
        return len(dat) + _ENTRY_OVERHEAD
    return _ENTRY_OVERHEAD


def _size(n: int) -> str:
    """200 MB, 27.5 MB, 64 KB."""
    if n >= MB:
        return f"{n / MB:.1f}".removesuffix(".0") + " MB"
    return f"{n // 1024} KB"
