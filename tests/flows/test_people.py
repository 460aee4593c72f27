"""When a person's weekly digest is due (their day and hour, in their time zone) and whom it never suggests."""

from __future__ import annotations

import datetime as dt

import pytest

from flows.people import GRACE, due_week, is_blocked, is_no_reply, schedule_text
from models.tables import UserSettings


def prefs(**values: object) -> UserSettings:
    return UserSettings(team_id="T", user_id="U", **values)  # type: ignore[arg-type]


def test_due_at_the_persons_own_day_and_hour() -> None:
    berlin = prefs(digest_day=0, digest_hour=9, timezone="Europe/Berlin")  # Mondays 09:00, UTC+1 in winter
    monday = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)  # 09:00 in Berlin
    due = due_week(berlin, monday)
    assert due is not None and due.period == dt.date(2026, 11, 30)
    assert (due.window_start, due.window_end) == (monday - dt.timedelta(days=7), monday)
    assert due_week(berlin, monday - dt.timedelta(minutes=1)) is None  # last week's is long past its grace
    assert due_week(berlin, monday + GRACE) is None  # a worker down for longer waits for next week
    assert due_week(berlin, monday + dt.timedelta(hours=3)).period == dt.date(2026, 11, 30)  # type: ignore[union-attr]


def test_summer_time_and_unknown_zones() -> None:
    summer = due_week(
        prefs(digest_day=2, digest_hour=17, timezone="America/New_York"), dt.datetime(2026, 7, 1, 21, 5, tzinfo=dt.UTC)
    )
    assert summer is not None and summer.window_end == dt.datetime(2026, 7, 1, 21, 0, tzinfo=dt.UTC)  # 17:00 EDT
    nowhere = due_week(
        prefs(digest_day=2, digest_hour=17, timezone="Mars/Olympus"), dt.datetime(2026, 7, 1, 17, 5, tzinfo=dt.UTC)
    )
    assert nowhere is not None and nowhere.window_end.hour == 17  # UTC


@pytest.mark.parametrize("values", [{"digest_day": None}, {"notification_level": "nothing"}])
def test_off_or_no_direct_messages_means_no_digest(values: dict[str, object]) -> None:
    assert due_week(prefs(**values), dt.datetime(2026, 11, 30, 9, 5, tzinfo=dt.UTC)) is None


def test_schedule_in_words() -> None:
    assert schedule_text(prefs(digest_day=None)) == "off"
    assert schedule_text(prefs(digest_day=4, digest_hour=7)) == "Fridays at 07:00 your time"


@pytest.mark.parametrize(
    ("address", "no_reply"),
    [
        ("noreply@x.com", True),
        ("no-reply@x.com", True),
        ("no_reply+abc@x.com", True),
        ("calendar-noreply@google.com", True),
        ("donotreply@bank.com", True),
        ("do-not-reply@bank.com", True),
        ("mailer-daemon@x.com", True),
        ("bounces@x.com", True),
        ("noreen@x.com", False),
        ("reply@x.com", False),
        ("jane@noreply.com", False),
    ],
)
def test_no_reply_addresses(address: str, no_reply: bool) -> None:
    assert is_no_reply(address) is no_reply


def test_blocked_as_the_engine_blocks() -> None:
    patterns = {"spam.biz", "boss@work.com"}
    assert is_blocked("a@spam.biz", patterns) and is_blocked("a@mail.spam.biz", patterns)
    assert is_blocked("boss@work.com", patterns) and not is_blocked("other@work.com", patterns)
    assert not is_blocked("a@notspam.biz", patterns)
