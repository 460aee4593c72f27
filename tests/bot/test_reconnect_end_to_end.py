"""Reconnecting after a password change, as a person does it: the error DM's Reconnect, the link, Chromium."""

from __future__ import annotations

import json

from sqlalchemy import update

from bot import ids
from bot.slack_app import slack_notifier
from flows import setup as setup_flow
from models.clock import utcnow
from models.db import session_scope
from models.tables import EmailAccount
from sync.engine import Outcome, sync_account
from tests.bot.test_setup_end_to_end import fill_connect_page
from tests.support.slack_app import connect_mailbox


def dms(slack, text: str) -> list:
    return [c for c in slack.fake.calls_to("chat.postMessage") if text in c.args.get("text", "")]


def test_reconnect_names_the_mailbox_says_what_happens_next_and_sends_one_message(slack, mailbox, smtp, page):
    address = f"{mailbox.user}@example.net"
    state = connect_mailbox(slack, mailbox)
    db = slack.services.db
    setup_flow.save_step(db, state.session_id, team_id="T0001", user_id="U0001", step="start", start="1m")
    account = setup_flow.finish(db, state.session_id, team_id="T0001", user_id="U0001")
    notifier = slack_notifier(slack.services)  # the worker's notifier: DMs through the fake Slack
    assert notifier is not None
    slack.services.notifier = notifier
    deps = slack.services.engine_deps("test")
    deps.config.ssl_context = mailbox.server.ssl_context

    def sync() -> Outcome:
        with session_scope(db) as session:
            session.execute(update(EmailAccount).values(next_sync_at=utcnow()))
        outcome = sync_account(deps, account)
        notifier.flush()  # its Slack calls leave from the outbox thread
        return outcome

    assert sync() is Outcome.DONE
    smtp.users[mailbox.user] = "new-app-password"
    mailbox.server.set_password(mailbox.user, "new-app-password")  # the password changes at the provider
    try:
        assert sync() is Outcome.FAILED
        [error] = dms(slack, "stopped")
        message = slack.fake.messages[(error.response["channel"], error.response["ts"])]
        slack.driver.block_action(ids.A_HOME_RECONNECT, container_message=message)
        view = slack.fake.wait_for("views.open")[-1].response["view"]
        link = next(e["url"] for b in view["blocks"] if b["type"] == "actions" for e in b["elements"])

        page.goto(link)
        assert page.input_value("#email") == address  # a reconnect knows its mailbox
        fill_connect_page(page, link, mailbox, smtp.port, "new-app-password")
        assert page.inner_text("h1") == "Reconnected"
        done = page.inner_text("#done")
        assert done.startswith(f"{address} is reconnected with every setting kept"), done
        assert "syncs again now" in done and "sent you a message in Slack" in done
        assert "None" not in done and "Continue setup" not in done  # no button is sent for a reconnect

        [told] = dms(slack, "reconnected")
        assert address in told.args["text"] and "blocks" in told.args
        assert sync() is Outcome.DONE
        # One message about the reconnect: the first good sync after it does not add "is syncing again".
        assert dms(slack, "reconnected") == [told] and dms(slack, "is syncing again") == []
        with session_scope(db) as session:
            row = session.get(EmailAccount, account)
            assert row is not None and (row.state, row.start_option, row.last_error_code) == ("active", "1m", None)

        # A new failure after the reconnect is told again (the old error does not mute it).
        mailbox.server.set_password(mailbox.user, "changed-again")
        assert sync() is Outcome.FAILED
        assert len(dms(slack, "stopped")) == 2
        assert "Reconnect" in json.dumps(dms(slack, "stopped")[-1].args)
    finally:
        mailbox.server.set_password(mailbox.user, mailbox.password)
