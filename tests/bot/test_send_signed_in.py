"""Sending from a mailbox signed in with Google or Microsoft: XOAUTH2 with the stored (or refreshed) token,
and no APPEND to Sent (those providers keep the sent copy themselves)."""

from __future__ import annotations

import json

from sqlalchemy import update
from sqlmodel import select

from bot import ids
from models.clock import utcnow
from models.db import session_scope
from models.tables import EmailAccount, SentEmail
from tests.bot.test_signin import signed_in_account
from tests.support.signin import SignInStack
from tests.support.slack_app import SlackHarness


def send(app: SlackHarness, account_id: int) -> str:
    opened = len(app.fake.calls_to("views.open"))
    updates = len(app.fake.calls_to("views.update"))
    app.driver.slash_command("send grace@example.org")
    modal = app.fake.wait_for("views.open", count=opened + 1)[-1].response["view"]
    app.driver.view_submission(
        modal["id"],
        {
            ids.B_SEND_FROM: {ids.A_SEND_FROM: str(account_id)},
            ids.B_SEND_TO: {ids.A_SEND_TO: ["grace@example.org"]},
            ids.B_SEND_SUBJECT: {ids.A_SEND_SUBJECT: "Hello"},
            ids.B_SEND_BODY: {
                ids.A_SEND_BODY: {
                    "rich_text_value": {
                        "type": "rich_text",
                        "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": "Hi"}]}],
                    }
                }
            },
            ids.B_SEND_TRACKING: {ids.A_SEND_TRACKING: ["track_opens"]},
        },
    )
    return json.dumps(app.fake.wait_for("views.update", count=updates + 1, timeout=30)[-1].args["view"])


def test_send_with_xoauth2_refreshing_an_expired_token_and_no_sent_append(
    app: SlackHarness, stack: SignInStack
) -> None:
    email = f"ada-{stack.name}@example.com"
    stack.dovecot.add_mailbox(email)
    account_id = signed_in_account(app, stack, email)
    before = len(stack.smtp.received)
    assert "was sent to grace@example.org" in send(app, account_id)
    assert len(stack.smtp.received) == before + 1
    assert stack.smtp.token_logins[-1][1:] == (email, True)
    # An access token past its expiry is refreshed (under the account's lease) before the SMTP login.
    with session_scope(app.services.db) as session:
        session.exec(update(EmailAccount).values(oauth_expires_at=utcnow()))
    refreshes = stack.idp.token_calls["refresh_token"]
    assert "was sent to grace@example.org" in send(app, account_id)
    assert len(stack.smtp.received) == before + 2 and stack.smtp.token_logins[-1][1:] == (email, True)
    assert stack.idp.token_calls["refresh_token"] == refreshes + 1
    with session_scope(app.services.db, readonly=True) as session:
        rows = session.exec(select(SentEmail)).all()
        assert [r.status for r in rows] == ["sent", "sent"]
    # Google and Microsoft save the sent copy themselves: the app never APPENDed (Dovecot's raw IMAP log).
    logs = [p.read_bytes() for p in stack.dovecot.rawlog_dir(email).glob("*.in")]
    assert any(b" LIST " in log for log in logs)  # the raw log records this mailbox's sessions
    assert not any(b" APPEND " in log.upper() for log in logs)
