"""Building test messages and a notifier that records what the engine reports."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from email.utils import format_datetime

from sync.notifier import RunReport

_counter = itertools.count(1)


def make_message(
    *,
    subject: str = "Hello",
    sender: str = "Alice <alice@example.com>",
    to: str = "Bob <bob@example.org>",
    cc: str | None = None,
    extra_headers: dict[str, str] | None = None,
    date: dt.datetime | None = None,
    message_id: str | bool | None = True,
    body: str = "Hi there,\nthis is a test.\n",
) -> bytes:
    """A small RFC 5322 message; message_id=True invents a unique one, None/False leaves it out."""
    date = date or dt.datetime.now(dt.UTC)
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Date: {format_datetime(date)}"]
    if cc:
        lines.append(f"Cc: {cc}")
    if message_id is True:
        lines.append(f"Message-ID: <test-{next(_counter)}-{dt.datetime.now().timestamp()}@example.com>")
    elif message_id:
        lines.append(f"Message-ID: {message_id}")
    for name, value in (extra_headers or {}).items():
        lines.append(f"{name}: {value}")
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "", body]
    return "\r\n".join(lines).encode()


@dataclass
class RecordingNotifier:
    """Keeps every notification for assertions."""

    events: list[tuple[str, RunReport, tuple[str, ...]]] = field(default_factory=list)

    def kinds(self) -> list[str]:
        """The notification names in order."""
        return [e[0] for e in self.events]

    def sync_started(self, report: RunReport) -> None:
        """Record."""
        self.events.append(("started", report, ()))

    def sync_progress(self, report: RunReport) -> None:
        """Record."""
        self.events.append(("progress", report, ()))

    def sync_completed(self, report: RunReport) -> None:
        """Record."""
        self.events.append(("completed", report, ()))

    def sync_failed(self, report: RunReport, code: str, message: str, fix: str) -> None:
        """Record."""
        self.events.append(("failed", report, (code, message, fix)))

    def sync_recovered(self, report: RunReport) -> None:
        """Record."""
        self.events.append(("recovered", report, ()))
