"""Windowed UID SEARCH against the real Dovecot: the preview's SINCE count stays under imaplib's line limit."""

from __future__ import annotations

import datetime as dt
import imaplib

import pytest

from sync.errors import SyncError
from sync.imap_session import imap_session
from sync.preview import preview_window
from sync.uid_search import search_newest_first, search_uid_range
from tests.support.mail import make_message
from tests.support.network import LOOPBACK_POLICY
from tests.sync.test_engine_hardening import clear_rawlog, rawlog_commands

OLD = dt.datetime.now() - dt.timedelta(days=40)
RECENT = dt.datetime.now() - dt.timedelta(days=3)
SINCE = (dt.datetime.now() - dt.timedelta(days=10)).date()
# A SEARCH reply of 2,000 UIDs is ~9 kB; imaplib refuses lines longer than this (1 MB in real life).
SHORT_LINE = 4000


@pytest.fixture
def big_folder(mailbox):
    """INBOX with 300 messages before the window and 1,700 inside it."""
    messages = [(make_message(subject=f"old {i}"), OLD) for i in range(300)]
    messages += [(make_message(subject=f"recent {i}"), RECENT) for i in range(1700)]
    mailbox.server.seed_maildir(mailbox.user, "INBOX", messages)
    return mailbox


def test_an_unwindowed_search_since_passes_the_line_limit(big_folder, dovecot, monkeypatch):
    """The failure the windows avoid, shown with imaplib's limit scaled down to the folder."""
    monkeypatch.setattr(imaplib, "_MAXLINE", SHORT_LINE)
    session = imap_session(big_folder.login, timeout=10, ssl_context=dovecot.ssl_context, outbound=LOOPBACK_POLICY)
    with pytest.raises((SyncError, imaplib.IMAP4.error)), session as c:
        c.select_folder("INBOX", readonly=True)
        c.search(["SINCE", SINCE])


def test_the_preview_counts_a_big_folder_in_windows(big_folder, dovecot, monkeypatch):
    monkeypatch.setattr(imaplib, "_MAXLINE", SHORT_LINE)
    clear_rawlog(big_folder)
    found = preview_window(
        big_folder.login,
        ["INBOX"],
        SINCE,
        None,
        timeout=10,
        ssl_context=dovecot.ssl_context,
        outbound=LOOPBACK_POLICY,
        search_window=500,
    )
    assert (found.total, found.with_contacts, found.capped) == (1700, None, False)
    searches = [c.upper() for c in rawlog_commands(big_folder) if "SEARCH" in c.upper()]
    since = [c for c in searches if "SINCE" in c]
    assert len(since) == 4  # UIDs 1..2000 in windows of 500
    assert all(c.startswith("UID SEARCH UID ") for c in since), since


def test_the_preview_reads_contacts_newest_first_across_windows(big_folder, dovecot):
    found = preview_window(
        big_folder.login,
        ["INBOX", "Missing"],
        SINCE,
        {"nobody@example.org"},
        timeout=10,
        ssl_context=dovecot.ssl_context,
        outbound=LOOPBACK_POLICY,
        max_header_scan=50,
        search_window=64,
    )
    assert (found.total, found.with_contacts, found.capped) == (1700, 0, True)


def test_windows_cover_the_folder_newest_first_and_keep_to_their_range(big_folder, dovecot):
    with imap_session(big_folder.login, timeout=10, ssl_context=dovecot.ssl_context, outbound=LOOPBACK_POLICY) as c:
        c.select_folder("INBOX", readonly=True)
        windows = list(search_newest_first(c, top=2000, window=300, criteria=["SINCE", SINCE]))
        assert [len(w) for w in windows] == [300, 300, 300, 300, 300, 200, 0]
        flat = [u for w in windows for u in w]
        assert flat == list(range(2000, 300, -1))
        assert search_uid_range(c, 1995, 2005) == [1995, 1996, 1997, 1998, 1999, 2000]
        assert search_uid_range(c, 5000, 6000) == []
        assert list(search_newest_first(c, top=0, window=300)) == []
