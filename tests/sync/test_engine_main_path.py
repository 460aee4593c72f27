"""The engine's main path against a real Dovecot, on SQLite and PostgreSQL (issue: foundation, tests 1-6)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flows.contacts import add_contact, import_contacts_csv
from flows.export import export_messages
from sync.engine import Outcome
from tests.support.mail import make_message

NOW = dt.datetime.now(dt.UTC)


def days_ago(n: int) -> dt.datetime:
    return NOW - dt.timedelta(days=n)


def exported(deps: Any, account_id: int) -> list[dict[str, Any]]:
    return list(export_messages(deps.db, account_id=account_id))


def subjects(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(r["subject"] for r in rows)


def test_same_message_in_two_folders_is_one_message(mailbox, connect, run_sync, deps):
    mailbox.create("Archive")
    raw = make_message(subject="twice", message_id="<same@example.com>")
    mailbox.append("INBOX", raw, date=days_ago(3))
    mailbox.append("Archive", raw, date=days_ago(3))
    # Two different messages that share a Message-ID (a broken client) stay two.
    mailbox.append("INBOX", make_message(subject="clash A", message_id="<clash@example.com>"), date=days_ago(2))
    mailbox.append("INBOX", make_message(subject="clash B, longer", message_id="<clash@example.com>"), date=days_ago(2))
    # A message without a Message-ID is kept once, and a rerun does not add it again.
    mailbox.append("INBOX", make_message(subject="no id", message_id=None), date=days_ago(1))
    account = connect(start="1m")
    assert run_sync(account) is Outcome.DONE
    assert run_sync(account) is Outcome.DONE
    rows = exported(deps, account)
    assert subjects(rows) == ["clash A", "clash B, longer", "no id", "twice"]
    twice = next(r for r in rows if r["subject"] == "twice")
    assert twice["folders"] == ["Archive", "INBOX"]


def test_start_date_window_and_now(mailbox, connect, run_sync, deps):
    mailbox.append("INBOX", make_message(subject="inside"), date=days_ago(10))
    mailbox.append("INBOX", make_message(subject="outside"), date=days_ago(60))
    account = connect(start="1m")
    run_sync(account)
    assert subjects(exported(deps, account)) == ["inside"]


def test_start_now_takes_only_new_mail(mailbox, connect, run_sync, deps):
    mailbox.append("INBOX", make_message(subject="old"), date=days_ago(1))
    account = connect(start="now")
    run_sync(account)
    assert exported(deps, account) == []
    mailbox.append("INBOX", make_message(subject="new"))
    run_sync(account)
    assert subjects(exported(deps, account)) == ["new"]


def test_contacts_only_past_sync(mailbox, connect, run_sync, deps):
    account = None
    csv = "email,name\nfrom@crm.test,F\nsender@crm.test,S\nreply@crm.test,R\n"
    csv += "to@crm.test,T\ncc@crm.test,C\nbcc@crm.test,B\n"
    csv += "group@crm.test,G\nutf@crm.test,U\n"
    report = import_contacts_csv(deps.db, team_id=connect.team, text=csv)
    assert report.added == 8 and not report.errors
    cases = {
        "from": {"sender": "Someone <FROM@CRM.TEST>"},
        "sender": {"extra_headers": {"Sender": "sender@crm.test"}},
        "reply": {"extra_headers": {"Reply-To": "Reply <Reply@Crm.Test>"}},
        "to": {"to": "to@crm.test"},
        "cc": {"cc": "x@y.test, CC@crm.test"},
        "bcc": {"extra_headers": {"Bcc": "bcc@crm.test"}},
        "group": {"to": "Partners: one@other.test, group@crm.test;"},
        "rfc2047": {"to": "=?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <utf@crm.test>"},
        "stranger": {"sender": "nobody@elsewhere.test"},
    }
    for subject, headers in cases.items():
        mailbox.append("INBOX", make_message(subject=subject, **headers), date=days_ago(5))
    account = connect(start="3m", contact_scope="contacts")
    run_sync(account)
    rows = exported(deps, account)
    assert subjects(rows) == sorted(k for k in cases if k != "stranger")
    assert next(r for r in rows if r["subject"] == "rfc2047")["contacts"] == ["utf@crm.test"]
    # Mail arriving after setup follows the folder choice alone, whoever sent it.
    mailbox.append("INBOX", make_message(subject="new stranger", sender="nobody@elsewhere.test"))
    run_sync(account)
    assert "new stranger" in subjects(exported(deps, account))
    # A contact added later is linked at once to the mail already stored.
    email, linked = add_contact(deps.db, team_id=connect.team, email="Nobody@Elsewhere.test", name="N")
    assert (email, linked) == ("nobody@elsewhere.test", 1)
    row = next(r for r in exported(deps, account) if r["subject"] == "new stranger")
    assert row["contacts"] == ["nobody@elsewhere.test"]


def test_folder_names_and_sync_all_exclusions(mailbox, connect, run_sync, deps):
    for name in ("Entwürfe Ärger", "Projects.2026", "Trash", "Junk", "Drafts"):
        mailbox.create(name)
        mailbox.append(name, make_message(subject=f"in {name}"), date=days_ago(2))
    account = connect(start="1m")
    run_sync(account)
    rows = exported(deps, account)
    assert {r["folders"][0] for r in rows} == {"Entwürfe Ärger", "Projects.2026"}


def test_one_chosen_label_syncs_that_folder_alone(mailbox, connect, run_sync, deps):
    mailbox.create("Projects.2026")
    mailbox.append("Projects.2026", make_message(subject="project"), date=days_ago(2))
    mailbox.append("INBOX", make_message(subject="inbox"), date=days_ago(2))
    account = connect(start="1m", sync_mode="labels", folders=("Projects.2026",))
    run_sync(account)
    assert subjects(exported(deps, account)) == ["project"]
    mailbox.append("INBOX", make_message(subject="inbox later"))
    run_sync(account)
    assert subjects(exported(deps, account)) == ["project"]


def test_new_mail_arrives_and_no_change_stores_nothing(mailbox, connect, run_sync, deps, notifier):
    mailbox.append("INBOX", make_message(subject="first"), date=days_ago(1))
    account = connect(start="1m")
    run_sync(account)
    mailbox.append("INBOX", make_message(subject="second"))
    run_sync(account)
    assert subjects(exported(deps, account)) == ["first", "second"]
    last = [e for e in notifier.events if e[0] == "completed"][-1][1]
    assert (last.stored, last.processed) == (1, 1)
    told = len(notifier.events)
    run_sync(account)
    assert len(notifier.events) == told  # a no-change poll says nothing (DESIGN section 5, item 12)
    assert len(exported(deps, account)) == 2


def test_sync_never_changes_server_flags(mailbox, connect, run_sync, deps):
    uid_unseen = mailbox.append("INBOX", make_message(subject="unread"), date=days_ago(1))
    uid_seen = mailbox.append("INBOX", make_message(subject="read"), flags=("\\Seen",), date=days_ago(1))
    account = connect(start="1m")
    run_sync(account)
    client = mailbox.server.client(mailbox.user, mailbox.password)
    try:
        client.select_folder("INBOX", readonly=True)
        flags = client.get_flags([uid_unseen, uid_seen])
    finally:
        client.logout()
    assert b"\\Seen" not in flags[uid_unseen]
    assert b"\\Seen" in flags[uid_seen]
    assert len(exported(deps, account)) == 2
