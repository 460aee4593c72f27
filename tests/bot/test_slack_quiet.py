"""The sync side's Slack calls: Home only when it changed (coalesced per person), a queue off the sync thread.

Real parts: the Bolt app over HTTP against the strict fake Slack, real Dovecot, the real engine; the
Slack client is the one the worker builds (429s waited out by slack_sdk, every call counted).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

from bot.actions.home import build_home
from bot.deps import make_web_client
from bot.notifier import SlackNotifier
from bot.slack_outbox import SlackOutbox
from flows import lifecycle
from models.db import session_scope
from models.tables import EmailAccount
from sync.engine import Outcome, sync_account
from sync.metrics import REGISTRY
from tests.bot.test_home_and_notifications import connect_account, report
from tests.support.mail import make_message


def notifier_for(slack, *, home_every: float) -> SlackNotifier:
    """The notifier as the worker builds it (slack_notifier), with a chosen Home interval."""
    services = slack.services
    return SlackNotifier(
        services.db,
        lambda _team: make_web_client(services.settings),
        build_home=lambda team_id, user_id: build_home(services.db, team_id, user_id),
        home_every_seconds=home_every,
        drain_seconds=5,
    )


def publishes(slack, user_id: str = "U0001") -> list:
    return [c for c in slack.fake.calls_to("views.publish") if c.args.get("user_id") == user_id and c.ok]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_identical_reports_publish_home_once_and_a_change_publishes_again(slack, mailbox):
    account = connect_account(slack, mailbox, start="now")
    notifier = notifier_for(slack, home_every=0)
    try:
        before = len(publishes(slack))
        quiet = report(slack, account, kind="incremental")
        notifier.sync_completed(quiet)
        assert notifier.flush()
        notifier.sync_completed(quiet)  # nothing the tab shows changed
        assert notifier.flush()
        assert len(publishes(slack)) == before + 1

        lifecycle.pause(slack.services.db, account, team_id="T0001", user_id="U0001")
        notifier.sync_completed(quiet)
        assert notifier.flush()
        assert len(publishes(slack)) == before + 2
        assert "Resume" in json.dumps(slack.fake.home_tabs["U0001"])  # the new state is what Slack shows
        notifier.sync_completed(quiet)
        assert notifier.flush()
        assert len(publishes(slack)) == before + 2
    finally:
        notifier.close()


def test_a_burst_inside_the_interval_is_one_trailing_publish_of_the_latest_state(slack, mailbox):
    account = connect_account(slack, mailbox, start="now")
    notifier = notifier_for(slack, home_every=6)  # long enough for the burst below on a loaded machine
    try:
        before = len(publishes(slack))
        notifier.sync_completed(report(slack, account, kind="incremental"))
        slack.fake.wait_for("views.publish", count=before + 1, predicate=lambda c: c.ok)
        # Two changes right after a publish: both land inside the interval.
        lifecycle.pause(slack.services.db, account, team_id="T0001", user_id="U0001")
        notifier.sync_failed(report(slack, account, kind="incremental"), "provider_unavailable", "down", "")
        lifecycle.save_general_settings(
            slack.services.db, team_id="T0001", user_id="U0001", notification_level="errors"
        )
        notifier.sync_completed(report(slack, account, kind="incremental"))
        trailing = slack.fake.wait_for("views.publish", count=before + 2, timeout=30, predicate=lambda c: c.ok)
        time.sleep(7)  # past another interval: nothing else comes
        assert len(publishes(slack)) == before + 2
        # The one trailing publish shows the latest state (both changes), built when it was sent.
        assert trailing[-1].args["view"] == build_home(slack.services.db, "T0001", "U0001")
        assert "Resume" in json.dumps(slack.fake.home_tabs["U0001"])
    finally:
        notifier.close()


def test_a_429_from_slack_never_delays_the_sync_and_the_messages_arrive_afterwards(slack, mailbox):
    account = connect_account(slack, mailbox, start="1m")  # a past sync: it posts a progress message
    mailbox.append("INBOX", make_message(subject="old"), date=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    deps = slack.services.engine_deps("test")
    deps.config.ssl_context = mailbox.server.ssl_context
    deps.notifier = notifier = notifier_for(slack, home_every=0)
    limited_before = sample("emailsync_slack_rate_limited_total", method="chat.postMessage")
    posts_before = len(slack.fake.calls_to("chat.postMessage"))
    slack.fake.fail_next("chat.postMessage", status=429, retry_after=10)
    slack.fake.fail_next("views.publish", status=429, retry_after=10)
    try:
        assert sync_account(deps, account) is Outcome.DONE
        synced_at = time.time()
        # The sync is over (lease given back, mail stored) while the sender still waits out Retry-After.
        with session_scope(slack.services.db) as session:
            row = session.get(EmailAccount, account)
            assert row is not None and row.lease_owner is None and row.last_synced_at is not None
        assert not [c for c in slack.fake.calls_to("chat.postMessage")[posts_before:] if c.ok]
        ok_before = len([c for c in slack.fake.calls_to("chat.postMessage")[:posts_before] if c.ok])
        # The progress message, then the summary: both sent once Retry-After has passed.
        posted = slack.fake.wait_for("chat.postMessage", count=ok_before + 2, timeout=40, predicate=lambda c: c.ok)
        progress, done = posted[-2:]
        assert progress.at > synced_at and done.at > synced_at
        assert notifier.flush(60)
        assert [c.status for c in slack.fake.calls_to("chat.postMessage")[posts_before:]][:2] == [429, 200]
        assert publishes(slack) and publishes(slack)[-1].at > synced_at
        # The progress message was edited to its final state after it was posted, not lost.
        assert slack.fake.calls_to("chat.update") and slack.fake.calls_to("chat.update")[-1].ok
    finally:
        notifier.close()
    assert sample("emailsync_slack_rate_limited_total", method="chat.postMessage") == limited_before + 1
    assert sample("emailsync_slack_calls_total", method="views.publish", status="rate_limited") >= 1


def test_progress_edits_of_one_message_coalesce_latest_wins():
    outbox = SlackOutbox()
    gate = threading.Event()
    ran: list[str] = []
    try:
        outbox.submit(gate.wait)  # the sender is busy (as in a Retry-After wait)
        for n in range(5):
            outbox.submit(lambda n=n: ran.append(f"edit {n}"), key=("progress", 1))
        outbox.submit(lambda: ran.append("summary"))
        outbox.submit(lambda: ran.append("other run"), key=("progress", 2))
        gate.set()
        assert outbox.flush(10)
    finally:
        outbox.close(1)
    assert ran == ["edit 4", "summary", "other run"]


def test_stopping_drains_the_queue_within_its_bound(slack):
    client = make_web_client(slack.services.settings)
    outbox = SlackOutbox()
    for n in range(3):
        outbox.submit(lambda n=n: client.chat_postMessage(channel="U0001", text=f"queued {n}"))
    assert outbox.close(10) == 0
    assert [c.args["text"] for c in slack.fake.calls_to("chat.postMessage")[-3:]] == [
        "queued 0",
        "queued 1",
        "queued 2",
    ]

    # A Retry-After longer than the bound: the stop does not wait for it, and says what was dropped.
    slack.fake.fail_next("chat.postMessage", status=429, retry_after=60)
    outbox = SlackOutbox()
    outbox.submit(lambda: client.chat_postMessage(channel="U0001", text="late"))
    outbox.submit(lambda: client.chat_postMessage(channel="U0001", text="later"))
    slack.fake.wait_for("chat.postMessage", predicate=lambda c: c.status == 429)
    started = time.monotonic()
    assert outbox.close(1) == 2
    assert time.monotonic() - started < 30  # bounded by the drain time, not by Retry-After (60 s)
    assert outbox.submit(lambda: None) is False  # closed: nothing is taken any more
