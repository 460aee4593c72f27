"""App Home actions through the real app (owner, another user, another team, stale buttons) and the Slack notifier."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from bot import ids
from bot.notifier import SlackNotifier
from flows import setup as setup_flow
from flows.export import export_messages
from models.db import session_scope
from models.tables import EmailAccount
from sync.engine import Outcome, sync_account
from sync.notifier import RunReport
from tests.support.mail import make_message
from tests.support.slack_app import connect_mailbox


def connect_account(slack, mailbox, *, user_id: str = "U0001", start: str = "1m") -> int:
    state = connect_mailbox(slack, mailbox, user_id=user_id)
    setup_flow.save_step(
        slack.services.db, state.session_id, team_id="T0001", user_id=user_id, step="start", start=start
    )
    return setup_flow.finish(slack.services.db, state.session_id, team_id="T0001", user_id=user_id)


def account_row(slack, account_id: int) -> EmailAccount | None:
    with session_scope(slack.services.db) as session:
        return session.get(EmailAccount, account_id)


def home_of(slack, user_id: str = "U0001") -> str:
    slack.fake.wait_for("views.publish", predicate=lambda c: c.args.get("user_id") == user_id)
    return json.dumps(slack.fake.home_tabs[user_id], ensure_ascii=False)


def press(slack, action_id: str, account_id: int, *, user_id: str = "U0001", team_id: str | None = None):
    return slack.driver.block_action(
        action_id,
        value=str(account_id),
        user_id=user_id,
        team_id=team_id,
        strict=False,
        block_id=f"account_{account_id}",
    )


def test_home_shows_the_card_and_buttons_work_for_the_owner(slack, mailbox):
    account = connect_account(slack, mailbox)
    slack.driver.app_home_opened("U0001")
    home = home_of(slack)
    assert f"{mailbox.user}@example.net" in home and "Sync now" in home and "Delete my data" in home

    press(slack, ids.A_HOME_PAUSE, account)
    slack.fake.wait_for("views.publish", count=2)
    assert account_row(slack, account).state == "paused"
    assert "Resume" in json.dumps(slack.fake.home_tabs["U0001"])
    press(slack, ids.A_HOME_RESUME, account)
    slack.fake.wait_for("views.publish", count=3)
    assert account_row(slack, account).state == "active"
    press(slack, ids.A_HOME_SYNC, account)
    slack.fake.wait_for("views.publish", count=4)
    assert account_row(slack, account).next_sync_at <= dt.datetime.now(dt.UTC)

    press(slack, ids.A_HOME_WIDEN, account)
    widen = slack.fake.wait_for("views.open")[-1].response["view"]
    response = slack.driver.view_submission(
        widen["id"], {ids.B_START: {ids.A_START: "6m"}, ids.B_SCOPE: {ids.A_SCOPE: "all"}}
    )
    assert response.status_code == 200
    assert account_row(slack, account).start_option == "6m"

    press(slack, ids.A_HOME_EDIT, account)
    edit = slack.fake.wait_for("views.open", count=2)[-1].response["view"]
    slack.driver.view_submission(
        edit["id"], {ids.B_SYNC_MODE: {ids.A_SYNC_MODE: "all"}, ids.B_VISIBILITY: {ids.A_VISIBILITY: "shared"}}
    )
    assert account_row(slack, account).visibility == "shared"

    press(slack, ids.A_HOME_RECONNECT, account)
    reconnect = slack.fake.wait_for("views.open", count=3)[-1].response["view"]
    assert "/connect/" in json.dumps(reconnect)

    press(slack, ids.A_HOME_DISCONNECT, account)
    disconnect = slack.fake.wait_for("views.open", count=4)[-1].response["view"]
    slack.driver.view_submission(disconnect["id"], {ids.B_KEEP_MAIL: {ids.A_KEEP_MAIL: "delete"}})
    assert account_row(slack, account) is None
    # The button of the removed account is now stale: it says so and changes nothing.
    press(slack, ids.A_HOME_PAUSE, account)
    told = slack.fake.wait_for("chat.postEphemeral", predicate=lambda c: "no longer connected" in c.args["text"])
    assert told


@pytest.mark.parametrize(("user_id", "team_id"), [("U0002", None), ("U0001", "T0999")])
def test_another_user_or_team_is_refused_and_nothing_changes(slack, mailbox, user_id, team_id):
    account = connect_account(slack, mailbox)
    before = account_row(slack, account)
    for action in (ids.A_HOME_PAUSE, ids.A_HOME_SYNC, ids.A_HOME_DISCONNECT, ids.A_HOME_RECONNECT, ids.A_HOME_WIDEN):
        press(slack, action, account, user_id=user_id, team_id=team_id)
    slack.fake.wait_for("chat.postEphemeral", count=5)
    assert all("someone else" in c.args["text"] for c in slack.fake.calls_to("chat.postEphemeral"))
    assert slack.fake.calls_to("views.open") == []
    after = account_row(slack, account)
    assert (after.state, after.next_sync_at, after.start_option) == (
        before.state,
        before.next_sync_at,
        before.start_option,
    )
    # A forged modal submission with the account id in private_metadata is refused too.
    forged = {
        "type": "modal",
        "id": "VF",
        "callback_id": ids.DISCONNECT_VIEW,
        "private_metadata": str(account),
        "title": {"type": "plain_text", "text": "x"},
        "submit": {"type": "plain_text", "text": "x"},
        "blocks": [],
    }
    response = slack.driver.view_submission(
        forged, {}, user_id=user_id, team_id=team_id, strict=False, apply_response=False
    )
    assert "someone else" in json.dumps(response.json())
    assert account_row(slack, account) is not None


def report(
    slack, account: int, run_id: int = 1, *, processed: int = 0, total: int = 10, kind: str = "past"
) -> RunReport:
    return RunReport(
        account_id=account,
        run_id=run_id,
        team_id="T0001",
        user_id="U0001",
        email="me@example.net",
        kind=kind,
        total=total,
        processed=processed,
        stored=processed,
        skipped=0,
        failed_messages=0,
        contacts_matched=0,
        elapsed_seconds=processed,
    )


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def test_progress_is_edited_in_place_at_most_every_5_seconds(slack, mailbox, monkeypatch):
    account = connect_account(slack, mailbox)
    mailbox.append("INBOX", make_message(subject="x"), date=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    deps = slack.services.engine_deps("test")
    deps.config.ssl_context = mailbox.server.ssl_context
    deps.notifier = SlackNotifier(slack.services.db, lambda _team: slack.deps.client)
    assert sync_account(deps, account) is Outcome.DONE  # creates run 1, posts start, edits at the end
    assert deps.notifier.flush()  # Slack calls go through the outbox's sender thread
    clock = Clock()
    monkeypatch.setattr("bot.notifier.utcnow", clock)
    notifier = deps.notifier
    posted = len(slack.fake.calls_to("chat.postMessage"))
    notifier.sync_started(report(slack, account, run_id=1))
    for second in range(12):
        clock.now += dt.timedelta(seconds=1)
        notifier.sync_progress(report(slack, account, run_id=1, processed=second))
        assert notifier.flush()  # each edit sent before the next report (queued edits would coalesce)
    updates = [c for c in slack.fake.calls_to("chat.update")][-2:]
    assert len(slack.fake.calls_to("chat.postMessage")) == posted + 1  # one message per run, edited after
    assert len([c for c in slack.fake.calls_to("chat.update")]) >= 2
    assert all(c.args["ts"] == updates[0].args["ts"] for c in updates)
    # 12 progress calls over 12 s: edits at +5 s and +10 s only.
    assert len(slack.fake.calls_to("chat.update")) - 1 == 2


def test_repeated_errors_make_one_message_then_recovery_says_so(slack, mailbox):
    account = connect_account(slack, mailbox, start="now")
    deps = slack.services.engine_deps("test")
    deps.config.ssl_context = mailbox.server.ssl_context
    deps.notifier = SlackNotifier(slack.services.db, lambda _team: slack.deps.client)
    with session_scope(slack.services.db) as session:
        row = session.get(EmailAccount, account)
        row.imap_port = 1  # nothing listens there
        session.add(row)
    for _ in range(3):
        assert sync_account(deps, account) is Outcome.FAILED
    assert deps.notifier.flush()
    errors = [c for c in slack.fake.calls_to("chat.postMessage") if "stopped" in c.args.get("text", "")]
    assert len(errors) == 1 and "Reconnect" not in json.dumps(errors[0].args)
    with session_scope(slack.services.db) as session:
        row = session.get(EmailAccount, account)
        row.imap_port = mailbox.server.imaps_port
        session.add(row)
    assert sync_account(deps, account) is Outcome.DONE
    slack.fake.wait_for("chat.postMessage", predicate=lambda c: "is syncing again" in c.args.get("text", ""))


def test_wrong_password_gets_a_reconnect_button_and_level_nothing_is_silent(slack, mailbox):
    from flows import lifecycle

    account = connect_account(slack, mailbox, start="now")
    deps = slack.services.engine_deps("test")
    deps.config.ssl_context = mailbox.server.ssl_context
    deps.notifier = SlackNotifier(slack.services.db, lambda _team: slack.deps.client)
    mailbox.server.set_password(mailbox.user, "rotated")
    try:
        assert sync_account(deps, account) is Outcome.FAILED
        message = slack.fake.wait_for("chat.postMessage", predicate=lambda c: "stopped" in c.args.get("text", ""))[0]
        assert "Reconnect" in json.dumps(message.args) and "app password" in message.args["text"]
        lifecycle.save_general_settings(
            slack.services.db, team_id="T0001", user_id="U0001", notification_level="nothing"
        )
        with session_scope(slack.services.db) as session:
            row = session.get(EmailAccount, account)
            row.state, row.error_notified_code = "error", None
            session.add(row)
        sync_account(deps, account)
        assert deps.notifier.flush()
        assert len([c for c in slack.fake.calls_to("chat.postMessage") if "stopped" in c.args.get("text", "")]) == 1
    finally:
        mailbox.server.set_password(mailbox.user, mailbox.password)
    assert list(export_messages(slack.services.db, account_id=account)) == []


def test_a_repeated_error_is_reminded_daily_and_errors_only_mutes_progress(slack, mailbox, monkeypatch):
    from flows import lifecycle

    account = connect_account(slack, mailbox, start="now")
    clock = Clock()
    monkeypatch.setattr("bot.notifier.utcnow", clock)
    notifier = SlackNotifier(slack.services.db, lambda _team: slack.deps.client)
    lifecycle.save_general_settings(slack.services.db, team_id="T0001", user_id="U0001", notification_level="errors")

    def errors_posted() -> int:
        assert notifier.flush()
        return len([c for c in slack.fake.calls_to("chat.postMessage") if "stopped" in c.args.get("text", "")])

    notifier.sync_started(report(slack, account))
    assert notifier.flush()
    assert slack.fake.calls_to("chat.postMessage") == []  # errors only: no progress message
    for hours in (0, 1, 22):  # 23 hours after the first message: still quiet
        clock.now += dt.timedelta(hours=hours)
        notifier.sync_failed(report(slack, account), "timeout", "The server did not answer in time.", "")
    assert errors_posted() == 1
    clock.now += dt.timedelta(hours=1, minutes=1)  # a day after the first message
    notifier.sync_failed(report(slack, account), "timeout", "The server did not answer in time.", "")
    assert errors_posted() == 2
    notifier.sync_failed(report(slack, account), "auth_failed", "The server rejected the password.", "")
    assert errors_posted() == 3  # a different error is news at once
