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

from .dovecot import DovecotServer, _session_members, start_dovecot

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
        assert c.list_folders()  # INBOX at least
        assert c.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 0
    # hostname verification also passes for "localhost"
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


def test_wrong_password_fails_fast_and_password_change(server: DovecotServer) -> None:
    server.add_user("bob", "old-pw")
    server.client("bob", "old-pw").logout()
    t0 = time.monotonic()
    with pytest.raises(LoginError):
        server.client("bob", "wrong")
    with pytest.raises(LoginError):
        server.client("nobody-here", "x")
    # no 0.5 s failure delay, no anvil auth penalty on the next attempt
    server.client("bob", "old-pw").logout()
    server.set_password("bob", "new-pw")  # same second as the logins above
    with pytest.raises(LoginError):
        server.client("bob", "old-pw")
    server.client("bob", "new-pw").logout()
    assert time.monotonic() - t0 < 1.0


def test_folder_names_round_trip(server: DovecotServer) -> None:
    names = ["Projects.2026", "Entwürfe Ärger", "Projects.2026/Q1 Ü"]
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
    base = datetime(2023, 1, 1, 12, 0, 0, tzinfo=UTC)
    msgs = [(_message(f"seed {i}"), base + timedelta(minutes=i)) for i in range(1000)]
    t0 = time.monotonic()
    server.seed_maildir(USER, "Archive/Entwürfe Ärger 2023", msgs)
    assert time.monotonic() - t0 < 2.0
    with server.client(USER, PASSWORD) as c:
        folder = "Archive/Entwürfe Ärger 2023"
        assert c.folder_status(folder, ["MESSAGES"])[b"MESSAGES"] == 1000
        # seeding more into an already indexed folder is picked up too
        server.seed_maildir(USER, folder, [(_message("late"), base)])
        assert c.folder_status(folder, ["MESSAGES"])[b"MESSAGES"] == 1001
        c.select_folder(folder, readonly=True)
        data = c.fetch([1, 2, 3], ["INTERNALDATE", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        subjects = [data[u][b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() for u in sorted(data)]
        assert subjects == [b"Subject: seed 0", b"Subject: seed 1", b"Subject: seed 2"]
        first = data[min(data)][b"INTERNALDATE"]
        assert first.timestamp() == base.timestamp()
        assert folder in [name for _f, _s, name in c.list_folders()]
        c.logout()


def test_condstore_advertised_by_default(server: DovecotServer) -> None:
    with server.client(USER, PASSWORD) as c:
        caps = set(c.capabilities())
        c.logout()
    assert {b"CONDSTORE", b"QRESYNC", b"UIDPLUS", b"MOVE", b"SPECIAL-USE"} <= caps


def test_uidvalidity_change_via_doveadm(server: DovecotServer) -> None:
    server.create_folder(USER, PASSWORD, "Reset Me")
    with server.client(USER, PASSWORD) as c:
        before = c.folder_status("Reset Me", ["UIDVALIDITY"])[b"UIDVALIDITY"]
        c.logout()
    server.doveadm("mailbox", "update", "--uid-validity", str(before + 1000), "-u", USER, "Reset Me")
    with server.client(USER, PASSWORD) as c:
        assert c.folder_status("Reset Me", ["UIDVALIDITY"])[b"UIDVALIDITY"] == before + 1000
        c.logout()
    with pytest.raises(RuntimeError):
        server.doveadm("mailbox", "status", "-u", USER, "messages", "No Such Folder")


def test_rawlog_records_session(server: DovecotServer) -> None:
    server.add_user("carol", "pw")
    with server.client("carol", "pw") as c:
        c.select_folder("INBOX")
        c.logout()
    rawdir = server.rawlog_dir("carol")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ins = list(rawdir.glob("*.in"))
        outs = list(rawdir.glob("*.out"))
        if ins and outs and b"LOGOUT" in ins[0].read_bytes().upper():
            break
        time.sleep(0.02)
    assert ins and outs
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
        # an explicit CAPABILITY command after login agrees (checked with plain imaplib)
        raw = imaplib.IMAP4_SSL(srv.host, srv.imaps_port, ssl_context=srv.ssl_context())
        assert "CONDSTORE" not in raw.capabilities  # pre-login
        raw.login(USER, PASSWORD)
        typ, data = raw.capability()
        assert typ == "OK" and b"CONDSTORE" not in data[0] and b"UIDPLUS" in data[0]
        raw.logout()
        master = srv.pid
        assert master is not None and _session_members(master)
    finally:
        srv.stop()
    assert srv.pid is None
    assert _session_members(master) == []
    with pytest.raises(ProcessLookupError):
        os.kill(master, 0)
    srv.stop()  # idempotent
