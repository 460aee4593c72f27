"""Account lifecycle flows against Dovecot: widen the window, pause, resume, edit, disconnect, delete my data."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlmodel import select

from flows import lifecycle
from flows.accounts import FieldError
from flows.export import export_messages
from flows.setup import NotYours
from models.db import session_scope
from models.tables import EmailAccount
from sync.engine import Outcome, sync_account
from tests.support.mail import make_message

NOW = dt.datetime.now(dt.UTC)


def subjects(deps, account):
    return sorted(r["subject"] for r in export_messages(deps.db, account_id=account))


def owner(deps, account):
    with session_scope(deps.db) as session:
        row = session.get(EmailAccount, account)
        return {"team_id": row.team_id, "user_id": row.user_id}


def test_widening_the_window_fetches_only_the_new_part(mailbox, connect, run_sync, deps, notifier):
    mailbox.append("INBOX", make_message(subject="recent"), date=NOW - dt.timedelta(days=10))
    mailbox.append("INBOX", make_message(subject="older", sender="x@crm.test"), date=NOW - dt.timedelta(days=60))
    mailbox.append("INBOX", make_message(subject="older stranger"), date=NOW - dt.timedelta(days=70))
    mailbox.append("INBOX", make_message(subject="ancient"), date=NOW - dt.timedelta(days=200))
    account = connect(start="1m")
    run_sync(account)
    assert subjects(deps, account) == ["recent"]
    from flows.contacts import add_contact

    add_contact(deps.db, team_id=owner(deps, account)["team_id"], email="x@crm.test", name=None)
    with pytest.raises(FieldError):
        lifecycle.widen_window(deps.db, account, **owner(deps, account), start="1m", contact_scope="all")
    lifecycle.widen_window(deps.db, account, **owner(deps, account), start="3m", contact_scope="contacts")
    for path in mailbox.server.rawlog_dir(mailbox.user).glob("*"):
        path.unlink()
    run_sync(account)
    assert subjects(deps, account) == ["older", "recent"]
    sent = "".join(p.read_text(errors="replace") for p in mailbox.server.rawlog_dir(mailbox.user).glob("*.in"))
    assert "BEFORE" in sent and sent.count("BODY.PEEK[]") == 1  # only the one new message's body
    assert [e[1].kind for e in notifier.events if e[0] == "started"][-1] == "widen"


def test_pause_resume_and_sync_now(mailbox, connect, run_sync, deps):
    account = connect(start="now")
    who = owner(deps, account)
    lifecycle.pause(deps.db, account, **who)
    assert sync_account(deps, account) is Outcome.SKIPPED
    with pytest.raises(FieldError) as info:
        lifecycle.sync_now(deps.db, account, **who)
    assert "paused" in info.value.message
    lifecycle.resume(deps.db, account, **who)
    assert lifecycle.sync_now(deps.db, account, **who) is False
    assert run_sync(account) is Outcome.DONE


def test_only_the_owner_may_act_and_stale_ids_say_gone(mailbox, connect, deps):
    account = connect(start="now")
    who = owner(deps, account)
    with pytest.raises(NotYours):
        lifecycle.pause(deps.db, account, team_id=who["team_id"], user_id="USOMEONE")
    with pytest.raises(NotYours):
        lifecycle.disconnect(deps.db, account, team_id="TOTHER", user_id=who["user_id"], delete_mail=True)
    with pytest.raises(lifecycle.AccountGone):
        lifecycle.resume(deps.db, 987654, **who)
    with session_scope(deps.db) as session:
        assert session.get(EmailAccount, account).state == "active"


def test_edit_settings_and_general_settings(mailbox, connect, run_sync, deps):
    mailbox.create("Projects")
    mailbox.append("Projects", make_message(subject="project"), date=NOW - dt.timedelta(days=1))
    mailbox.append("INBOX", make_message(subject="inbox"), date=NOW - dt.timedelta(days=1))
    account = connect(start="1m", sync_mode="labels", folders=("INBOX",))
    run_sync(account)
    assert subjects(deps, account) == ["inbox"]
    who = owner(deps, account)
    with pytest.raises(FieldError):
        lifecycle.edit_settings(deps.db, account, **who, sync_mode="labels", folders=["Nope"])
    lifecycle.edit_settings(
        deps.db, account, **who, sync_mode="labels", folders=["INBOX", "Projects"], visibility="shared"
    )
    run_sync(account)
    assert subjects(deps, account) == ["inbox", "project"]
    lifecycle.save_general_settings(deps.db, **who, blocked=["Spam@X.test", "@noisy.test"], notification_level="errors")
    prefs, blocked = lifecycle.general_settings(deps.db, **who)
    assert blocked == ["noisy.test", "spam@x.test"] and prefs.notification_level == "errors"
    with pytest.raises(FieldError):
        lifecycle.save_general_settings(deps.db, **who, blocked=["not an address"])


def test_disconnect_keeps_or_deletes_and_delete_my_data(mailbox, connect, run_sync, deps):
    mailbox.append("INBOX", make_message(subject="kept"), date=NOW - dt.timedelta(days=1))
    account = connect(start="1m")
    run_sync(account)
    who = owner(deps, account)
    lifecycle.disconnect(deps.db, account, **who, delete_mail=False)
    with session_scope(deps.db) as session:
        row = session.get(EmailAccount, account)
        assert row.state == "disconnected" and row.secret_encrypted == ""
    assert subjects(deps, account) == ["kept"]
    assert lifecycle.delete_my_data(deps.db, **who) == 1
    assert list(export_messages(deps.db, account_id=account)) == []


def test_for_each_account_acts_on_the_persons_mailboxes_only(mailbox, connect, deps):
    account = connect(start="now")
    who = owner(deps, account)
    with session_scope(deps.db) as session:  # someone else in the same workspace, and a half-done setup
        for user_id, state in (("U2", "active"), (who["user_id"], "connecting")):
            other = EmailAccount.model_validate(
                {**session.get(EmailAccount, account).model_dump(exclude={"id"}), "user_id": user_id, "state": state}
            )
            other.email = f"{user_id}-{state}@example.net"
            session.add(other)
    [paused] = lifecycle.for_each_account(deps.db, "pause", **who)
    assert (paused.email, paused.done) == (f"{mailbox.user}@example.net", True)
    [refused] = lifecycle.for_each_account(deps.db, "sync", **who)
    assert not refused.done and "paused" in refused.refusal
    [resumed] = lifecycle.for_each_account(deps.db, "resume", **who)
    assert resumed.done and not resumed.queued
    with session_scope(deps.db) as session:
        states = {a.email: a.state for a in session.exec(select(EmailAccount)).all()}
    assert states == {
        f"{mailbox.user}@example.net": "active",
        "U2-active@example.net": "active",
        f"{who['user_id']}-connecting@example.net": "connecting",
    }
    with pytest.raises(ValueError, match="unknown action"):
        lifecycle.for_each_account(deps.db, "delete", **who)
