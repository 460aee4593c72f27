"""Unit tests of small pure pieces: backoff, folder roles, blocked addresses, start dates."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from flows.accounts import FieldError, start_date_for
from sync.backoff import backoff_seconds
from sync.fetch_pipeline import is_blocked as _is_blocked
from sync.folders import role_of, selected_by_default


def test_backoff_grows_from_5s_to_15min_with_jitter():
    rng = random.Random(1)
    first = [backoff_seconds(1, rng=rng) for _ in range(50)]
    assert all(2.5 <= w <= 5 for w in first) and len(set(first)) > 1
    assert all(450 <= backoff_seconds(20, rng=rng) <= 900 for _ in range(50))


@pytest.mark.parametrize(
    ("name", "flags", "role"),
    [
        ("INBOX", set(), "inbox"),
        ("Sent Items", set(), "sent"),
        ("[Gmail]/Sent Mail", set(), "sent"),
        ("Papierkorb", {b"\\trash"}, "trash"),
        ("Spam", set(), "junk"),
        ("Projects.2026", set(), None),
    ],
)
def test_folder_roles(name, flags, role):
    assert role_of(name, flags, "/") == role


def test_sync_all_leaves_out_trash_junk_drafts():
    assert [r for r in ("inbox", "sent", "trash", "junk", "drafts", None) if selected_by_default(r)] == [
        "inbox",
        "sent",
        None,
    ]


def test_blocked_address_domain_and_subdomain():
    blocked = {"spam@a.test", "noisy.test"}
    assert _is_blocked("spam@a.test", blocked)
    assert not _is_blocked("ham@a.test", blocked)
    assert _is_blocked("x@noisy.test", blocked) and _is_blocked("x@mail.noisy.test", blocked)
    assert not _is_blocked("x@notnoisy.test", blocked)


@pytest.mark.parametrize(
    ("option", "today", "expected"),
    [
        ("now", dt.date(2026, 11, 27), None),
        ("1m", dt.date(2026, 11, 27), dt.date(2026, 10, 27)),
        ("1m", dt.date(2026, 3, 31), dt.date(2026, 2, 28)),
        ("3m", dt.date(2026, 1, 15), dt.date(2025, 10, 15)),
        ("6m", dt.date(2026, 8, 31), dt.date(2026, 2, 28)),
        ("1y", dt.date(2024, 2, 29), dt.date(2023, 2, 28)),
        ("2025-05-01", dt.date(2026, 1, 1), dt.date(2025, 5, 1)),
    ],
)
def test_start_dates_are_calendar_months_back(option, today, expected):
    assert start_date_for(option, today) == expected


@pytest.mark.parametrize("option", ["2m", "2099-01-01", "yesterday"])
def test_bad_start_is_a_field_error(option):
    with pytest.raises(FieldError) as info:
        start_date_for(option, dt.date(2026, 11, 27))
    assert info.value.field == "start"


def test_uid_windows_skip_the_empty_stretches():
    from sync.engine import uid_windows

    assert list(uid_windows([], 10)) == []
    assert list(uid_windows([1, 2, 3], 10)) == [(1, 3)]
    assert list(uid_windows([1, 10, 11, 2**32 - 2], 10)) == [(1, 10), (11, 11), (2**32 - 2, 2**32 - 2)]
