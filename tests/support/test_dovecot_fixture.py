"""Quick checks that the private Dovecot test server behaves as the suite expects."""

from __future__ import annotations

import imaplib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from .dovecot import DovecotError, DovecotServer, _session_members, start_dovecot

USER = "alice"
PASSWORD = "s3cret-Pw"


def _message(subject: str, body: str = "hello") -> bytes:
    return (
        f"From: a@example.org\r\nTo: b@example.org\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.org>\r\n\r\n{body}\r\n"
    ).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    srv = start_dovecot(tmp_path_factory.mktemp("dovecot"))
    srv.add_user(USER, PASSWORD)
    try:
        yield srv
    finally:
        srv.stop()


def test_login_over_implicit_tls(server: DovecotServer) -> None:
    with server.client(USER, PASSWORD) as c:
        assert [name for _f, _s, name in c.list_folders()] == ["INBOX"]
        assert c.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 0
    # the certificate is also valid for "localhost"
    with IMAPClient("localhost", port=server.imaps_port, ssl=True, ssl_context=server.ssl_context(), timeout=10) as c:
        c.login(USER, PASSWORD)
        c.logout()


def test_starttls_on_plain_port(server: DovecotServer) -> None:
    c = IMAPClient(server.host, port=server.imap_port, ssl=False, timeout=10)
    assert b"STARTTLS" in c.capabilities()
    c.starttls(server.ssl_context())
    c.login(USER, PASSWORD)
    assert c.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 0
    c.logout()


def test_users_passwords_and_fast_failures(server: DovecotServer) -> None:
    server.add_user("Bob", "old-pw")  # case is kept (no %Lu lowercasing)
    server.client("Bob", "old-pw").logout()
    t0 = time.monotonic()
    with pytest.raises(LoginError):
        server.client("Bob", "wrong")
    with pytest.raises(LoginError):
        server.client("nobody-here", "x")
    with pytest.raises(LoginError):
        server.client("Bob", "")
    # no failure delay and no auth penalty on the next attempt from 127.0.0.1
    server.client("Bob", "old-pw").logout()
    server.set_password("Bob", "new-pw")  # same second as the logins above
    with pytest.raises(LoginError):
        server.client("Bob", "old-pw")
    server.client("Bob", "new-pw").logout()
    # 3 failures would cost >= 1.5 s with Dovecot's default failure delay, plus >= 2 s penalty
    assert time.monotonic() - t0 < 1.5
    with pytest.raises(ValueError):
        server.add_user("Bob", "again")


def test_folder_names_round_trip(server: DovecotServer) -> None:
    names = ["Projects.2026", "Entwürfe Ärger", "Projects.2026/Q1 & Ü"]
    for name in names:
        server.create_folder(USER, PASSWORD, name)
    server.create_folder(USER, PASSWORD, "Sent")
    with server.client(USER, PASSWORD) as c:
        listed = {name: flags for flags, _sep, name in c.list_folders()}
        for name in names:
            assert name in listed
        assert "Projects" not in listed  # one folder, not a hierarchy split at "."
        assert rb"\Sent" in listed["Sent"]
        assert "Trash" not in listed  # special-use folders are not auto-created
        c.logout()
    # seed_maildir finds the very directory IMAP created
    server.seed_maildir(USER, "Entwürfe Ärger", [(_message("draft"), datetime(2024, 1, 2, tzinfo=UTC))])
    with server.client(USER, PASSWORD) as c:
        assert c.folder_status("Entwürfe Ärger", ["MESSAGES"])[b"MESSAGES"] == 1
        c.logout()


def test_append_keeps_internaldate_and_flags(server: DovecotServer) -> None:
    when = datetime(2024, 3, 5, 14, 30, 15, tzinfo=timezone(timedelta(hours=2)))
    uid1 = server.append(USER, PASSWORD, "INBOX", _message("first"), flags=[rb"\Seen", "$Label1"], internal_date=when)
    uid2 = server.append(USER, PASSWORD, "INBOX", _message("second"))
    assert uid2 == uid1 + 1
    with server.client(USER, PASSWORD) as c:
        c.select_folder("INBOX", readonly=True)
        data = c.fetch([uid1], ["INTERNALDATE", "FLAGS"])[uid1]
        assert set(data[b"FLAGS"]) - {rb"\Recent"} == {rb"\Seen", b"$Label1"}
        assert data[b"INTERNALDATE"].timestamp() == when.timestamp()
        c.logout()


def test_seed_maildir_bulk(server: DovecotServer) -> None:
    folder = "Archive/Entwürfe Ärger 2023"
    base = datetime(2023, 1, 1, 12, 0, 0, tzinfo=UTC)
    msgs = [(_message(f"seed {i}"), base + timedelta(minutes=i)) for i in range(1000)]
    server.seed_maildir(USER, folder, msgs)
    with server.client(USER, PASSWORD) as c:
        assert c.folder_status(folder, ["MESSAGES", "UIDNEXT"]) == {b"MESSAGES": 1000, b"UIDNEXT": 1001}
        # seeding into an already indexed folder is picked up as well
        server.seed_maildir(USER, folder, [(_message("late"), base)])
        assert c.folder_status(folder, ["MESSAGES"])[b"MESSAGES"] == 1001
        c.select_folder(folder, readonly=True)
        data = c.fetch([1, 2, 3, 1000], ["INTERNALDATE", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        subjects = [data[u][b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() for u in (1, 2, 3, 1000)]
        assert subjects == [b"Subject: seed 0", b"Subject: seed 1", b"Subject: seed 2", b"Subject: seed 999"]
        assert data[1][b"INTERNALDATE"].timestamp() == base.timestamp()
        assert data[1000][b"INTERNALDATE"].timestamp() == (base + timedelta(minutes=999)).timestamp()
        listed = [name for _f, _s, name in c.list_folders()]
        assert folder in listed and "Archive" in listed
        c.logout()


def test_condstore_advertised_by_default(server: DovecotServer) -> None:
    with server.client(USER, PASSWORD) as c:
        caps = set(c.capabilities())
        c.logout()
    assert {b"CONDSTORE", b"QRESYNC", b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"IDLE"} <= caps


def test_uidvalidity_change_via_doveadm(server: DovecotServer) -> None:
    server.create_folder(USER, PASSWORD, "Reset Me")
    with server.client(USER, PASSWORD) as c:
        before = c.folder_status("Reset Me", ["UIDVALIDITY"])[b"UIDVALIDITY"]
        c.logout()
    server.doveadm("mailbox", "update", "--uid-validity", str(before + 1000), "-u", USER, "Reset Me")
    with server.client(USER, PASSWORD) as c:
        assert c.folder_status("Reset Me", ["UIDVALIDITY"])[b"UIDVALIDITY"] == before + 1000
        c.logout()
    with pytest.raises(DovecotError):
        server.doveadm("mailbox", "status", "-u", USER, "messages", "No Such Folder")


def test_rawlog_records_session(server: DovecotServer) -> None:
    server.add_user("carol", "pw")
    with server.client("carol", "pw") as c:
        c.select_folder("INBOX")
        c.logout()
    rawdir = server.rawlog_dir("carol")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ins, outs = list(rawdir.glob("*.in")), list(rawdir.glob("*.out"))
        if ins and outs and b"LOGOUT" in ins[0].read_bytes().upper():
            break
        time.sleep(0.01)
    assert len(ins) == 1 and len(outs) == 1
    assert b"SELECT" in ins[0].read_bytes().upper()
    assert b"UIDVALIDITY" in outs[0].read_bytes().upper()


def test_hide_condstore_and_stop(tmp_path_factory: pytest.TempPathFactory, server: DovecotServer) -> None:
    srv = start_dovecot(tmp_path_factory.mktemp("dovecot-nocond"), hide_condstore=True)
    try:
        srv.add_user(USER, PASSWORD)
        with srv.client(USER, PASSWORD) as c:
            hidden = set(c.capabilities())
            c.logout()
        with server.client(USER, PASSWORD) as c:
            normal = set(c.capabilities())
            c.logout()
        assert hidden == normal - {b"CONDSTORE", b"QRESYNC"}
        # an explicit CAPABILITY command after a STARTTLS login agrees
        raw = imaplib.IMAP4(srv.host, srv.imap_port)
        raw.starttls(ssl_context=srv.ssl_context())
        raw.login(USER, PASSWORD)
        typ, data = raw.capability()
        assert typ == "OK" and b"CONDSTORE" not in data[0] and b"UIDPLUS" in data[0]
        raw.logout()
        master = srv.pid
        assert master is not None and len(_session_members(master)) > 3
    finally:
        t0 = time.monotonic()
        srv.stop()
    assert time.monotonic() - t0 < 2.5  # Dovecot's own SIGTERM shutdown can take 1..6 s
    assert srv.pid is None
    assert _session_members(master) == []
    with pytest.raises(ProcessLookupError):
        os.kill(master, 0)
    srv.stop()  # idempotent


def test_update_mailbox_sets_large_server_numbers(server: DovecotServer) -> None:
    server.add_user("dave", "pw")
    server.update_mailbox("dave", "INBOX", uid_validity=2**32 - 1, min_next_uid=2**32 - 3)
    assert server.append("dave", "pw", "INBOX", _message("near the top")) == 2**32 - 3
    server.update_mailbox("dave", "INBOX", min_highest_modseq=2**63 - 1)
    with server.client("dave", "pw") as c:
        status = c.folder_status("INBOX", ["UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"])
        c.logout()
    assert status == {b"UIDVALIDITY": 2**32 - 1, b"UIDNEXT": 2**32 - 2, b"HIGHESTMODSEQ": 2**63 - 1}
    with pytest.raises(ValueError):
        server.update_mailbox("dave", "INBOX")


def test_many_idle_sessions_settings(tmp_path_factory: pytest.TempPathFactory, server: DovecotServer) -> None:
    """The settings bench/many_accounts.py raises reach Dovecot's parsed configuration, and IDLE reports new mail
    within seconds even where the machine's inotify instances are used up (it then looks every second)."""
    assert server.doveadm("config", "-h", "mailbox_idle_check_interval").strip() == "30 secs"  # Dovecot's default
    with start_dovecot(tmp_path_factory.mktemp("dovecot-many"), imap_process_limit=2300, idle_check_seconds=1) as srv:
        assert srv.doveadm("config", "-h", "mailbox_idle_check_interval").strip() == "1 secs"
        assert srv.doveadm("config", "-h", "service/imap/process_limit").strip() == "2300"
        srv.add_user(USER, PASSWORD)
        srv.seed_maildir(USER, "INBOX", [(_message("first"), datetime.now())])
        with srv.client(USER, PASSWORD) as c:
            c.select_folder("INBOX")
            c.idle()
            srv.seed_maildir(USER, "INBOX", [(_message("second"), datetime.now())])
            seen = []
            deadline = time.monotonic() + 10
            while not any(r[1] == b"EXISTS" for r in seen) and time.monotonic() < deadline:
                seen += c.idle_check(timeout=1)
            c.idle_done()
        assert (2, b"EXISTS") in seen
