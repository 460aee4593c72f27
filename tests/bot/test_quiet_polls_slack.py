"""Idle polls make no Slack call at all; a delivered message makes the run's notifications (real app, fake Slack)."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select

from bot.slack_app import slack_notifier
from models.db import session_scope
from models.tables import SyncRun
from sync.engine import Outcome, sync_account
from tests.bot.test_home_and_notifications import connect_account
from tests.support.mail import make_message


def run_count(slack, account: int) -> int:
    with session_scope(slack.services.db) as session:
        return len(session.exec(select(SyncRun).where(SyncRun.account_id == account)).all())


def test_idle_polls_call_slack_never_and_news_does(slack, mailbox):
    account = connect_account(slack, mailbox, start="now")
    deps = slack.services.engine_deps("test")
    deps.config.ssl_context = mailbox.server.ssl_context
    notifier = slack_notifier(slack.services)  # the worker's wiring: DMs and App Home
    assert notifier is not None
    deps.notifier = notifier
    assert sync_account(deps, account) is Outcome.DONE  # the first sync is recorded and shown
    notifier.flush()  # Slack calls leave from the outbox thread: everything of the first sync has gone
    slack.fake.wait_for("views.publish")
    runs = run_count(slack, account)
    calls = len(slack.fake.calls)

    for _ in range(5):
        assert sync_account(deps, account) is Outcome.DONE
    notifier.flush()
    assert len(slack.fake.calls) == calls, [c.summary() for c in slack.fake.calls[calls:]]
    assert run_count(slack, account) == runs

    mailbox.append("INBOX", make_message(subject="news"), date=dt.datetime.now(dt.UTC))
    assert sync_account(deps, account) is Outcome.DONE
    notifier.flush()
    assert run_count(slack, account) == runs + 1
    published = [c for c in slack.fake.calls[calls:] if c.method == "views.publish"]
    assert published, [c.summary() for c in slack.fake.calls[calls:]]
