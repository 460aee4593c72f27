"""Bad messages and failing servers never crash a sync or lose the messages around them."""

from __future__ import annotations

import datetime as dt
import socket
import threading

import pytest

from flows.accounts import check_connection
from flows.export import export_messages
from models.db import session_scope
from models.tables import BlockedAddress, EmailAccount
from sync.engine import Outcome
from sync.errors import Timeout
from sync.imap_session import ImapLogin
from tests.support.mail import make_message
from tests.support.network import LOOPBACK_POLICY

WHEN = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)

MALFORMED_MIME = (
    b"From: broken@example.com\r\nTo: bob@example.org\r\nSubject: malformed mime\r\n"
    b"Message-ID: <malformed@example.com>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="never-closed"\r\n\r\n'
    b"--never-closed\r\nContent-Type: text/plain; charset=no-such-charset\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n"
    b"--never-closed\r\nContent-Type: application/pdf; name==?bad?=\r\n\r\n%PDF garbage"
)
EIGHT_BIT_HEADERS = (
    b"From: \xc3\x9cml\xc3\xa4ut <umlaut@example.com>\r\nTo: \xff\xfe\xfd <raw@example.org>\r\n"
    b"Subject: caf\xe9 \xff undecodable =?utf-8?b?!!!?=\r\nMessage-ID: <8bit@example.com>\r\n"
    b"Date: not a date at all\r\n\r\nbody \xff\r\n"
)


def test_bad_messages_are_kept_and_neighbours_survive(mailbox, connect, run_sync, deps):
    deps.config.max_message_bytes = 50_000
    mailbox.append("INBOX", make_message(subject="before"), date=WHEN)
    mailbox.append("INBOX", MALFORMED_MIME, date=WHEN)
    mailbox.append("INBOX", EIGHT_BIT_HEADERS, date=WHEN)
    mailbox.append("INBOX", make_message(subject="huge", body="x" * 80_000), date=WHEN)
    mailbox.append("INBOX", make_message(subject="after"), date=WHEN)
    account = connect(start="1m")
    assert run_sync(account) is Outcome.DONE
    rows = {r["subject"]: r for r in export_messages(deps.db, account_id=account)}
    eight_bit_subject = next(s for s in rows if "undecodable" in s)
    assert eight_bit_subject.startswith("café ÿ")
    assert set(rows) == {"before", "malformed mime", eight_bit_subject, "huge", "after"}
    assert rows["huge"]["truncated"] is True and rows["huge"]["snippet"] is None
    assert rows["before"]["truncated"] is False
    eight_bit = rows[eight_bit_subject]
    assert eight_bit["from"] == ["umlaut@example.com"] and eight_bit["date"] is None
    assert rows["malformed mime"]["attachments"][0]["type"] == "application/pdf"


def test_blocked_address_and_domain_are_skipped(mailbox, connect, run_sync, deps):
    mailbox.append("INBOX", make_message(subject="from blocked", sender="spam@blocked.test"), date=WHEN)
    mailbox.append("INBOX", make_message(subject="sub domain", sender="x@mail.noisy.test"), date=WHEN)
    mailbox.append("INBOX", make_message(subject="fine", sender="friend@ok.test"), date=WHEN)
    account = connect(start="1m")
    with session_scope(deps.db) as session:
        owner = session.get(EmailAccount, account)
        session.add(BlockedAddress(team_id=owner.team_id, user_id=owner.user_id, pattern="spam@blocked.test"))
        session.add(BlockedAddress(team_id=owner.team_id, user_id=owner.user_id, pattern="noisy.test"))
    run_sync(account)
    assert [r["subject"] for r in export_messages(deps.db, account_id=account)] == ["fine"]


def test_wrong_password_after_setup_marks_needs_reauth(mailbox, connect, run_sync, deps, notifier):
    account = connect(start="now")
    mailbox.server.set_password(mailbox.user, "changed")
    assert run_sync(account) is Outcome.FAILED
    with session_scope(deps.db) as session:
        row = session.get(EmailAccount, account)
        assert row.state == "needs_reauth" and row.next_sync_at is None
        assert "app password" in row.last_error_message
    failed = [e for e in notifier.events if e[0] == "failed"]
    assert failed[-1][2][0] == "auth_failed"
    mailbox.server.set_password(mailbox.user, mailbox.password)


def test_unreachable_server_backs_off_and_recovers(mailbox, connect, run_sync, deps, notifier):
    account = connect(start="now")
    with session_scope(deps.db) as session:
        row = session.get(EmailAccount, account)
        real_port = row.imap_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            row.imap_port = s.getsockname()[1]
        session.add(row)
    assert run_sync(account) is Outcome.FAILED
    with session_scope(deps.db) as session:
        row = session.get(EmailAccount, account)
        assert row.state == "error" and row.last_error_code == "unreachable"
        wait = (row.next_sync_at - dt.datetime.now(dt.UTC)).total_seconds()
        assert 1 <= wait <= 6  # first retry: 2.5 to 5 s
        row.imap_port = real_port
        session.add(row)
    assert run_sync(account) is Outcome.DONE
    assert notifier.kinds()[-2:] == ["completed", "recovered"]


def test_server_that_never_answers_times_out(mailbox):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    conns = []
    threading.Thread(target=lambda: conns.append(listener.accept()), daemon=True).start()
    login = ImapLogin("127.0.0.1", listener.getsockname()[1], "tls", "u", "p")
    with pytest.raises(Timeout) as info:
        check_connection(login, None, timeout=1, outbound=LOOPBACK_POLICY)
    assert "did not answer in time" in str(info.value)
    listener.close()
