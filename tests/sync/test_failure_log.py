"""A failure repeating every tick is logged once, then reminded at growing intervals, and its end is said."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import create_engine, text

from sync.failure_log import FailureReminder, database_causes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_once_then_reminders_with_backoff_then_recovered(caplog):
    clock = Clock()
    log = logging.getLogger("test.failure_log")
    reminder = FailureReminder(log, "tick", describe=lambda exc: f"cause {exc}", first_reminder=60, clock=clock)
    caplog.set_level(logging.INFO, logger="test.failure_log")
    for _ in range(3600):  # an hour of ticks a second apart
        reminder.failed(RuntimeError("x"))
        clock.now += 1
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "tick failed: cause x"
    # reminders after 60 s, then 120, 240, 480, 960, 1920 s later: 1 + 5 lines in the hour, no traceback
    assert len(lines) == 6 and all("still failing" in line for line in lines[1:])
    assert "3600 times" not in lines[-1] and "next reminder in 32 min" in lines[-1]
    assert not any(r.exc_info for r in caplog.records)
    reminder.recovered()
    assert caplog.records[-1].getMessage().startswith("tick works again after 3600 failures in 60 min")
    reminder.recovered()  # once only
    assert len(caplog.records) == 7


def test_an_unknown_failure_keeps_its_traceback_once(caplog):
    reminder = FailureReminder(logging.getLogger("test.failure_log"), "tick", clock=Clock())
    caplog.set_level(logging.INFO, logger="test.failure_log")
    for _ in range(10):
        reminder.failed(ZeroDivisionError("boom"))
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None


@pytest.mark.parametrize("url", ["sqlite:////nonexistent-dir-emailsync/x.db"])
def test_database_causes_names_the_cause(url):
    engine = create_engine(url)
    with pytest.raises(Exception) as failure, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert "cannot open the SQLite file /nonexistent-dir-emailsync/x.db" in (
        database_causes(engine)(failure.value) or ""
    )
