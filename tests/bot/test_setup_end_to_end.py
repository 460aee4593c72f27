"""What a new user does: /emailsync → modal → connect page in Chromium → steps → Sync → the first sync runs."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import update

from bot import ids
from bot.slack_app import slack_notifier
from flows.contacts import import_contacts_csv
from flows.export import export_messages
from models.clock import utcnow
from models.db import session_scope
from models.tables import EmailAccount
from sync.scheduler import Clock, LocalDispatcher
from tests.support.mail import make_message

DAY = dt.timedelta(days=1)


def link_of(view: dict) -> str:
    block = next(b for b in view["blocks"] if b.get("block_id") == ids.B_CONNECT)
    return block["elements"][0]["url"]


def option_values(view: dict, block_id: str, texts: list[str]) -> list[str]:
    element = next(b for b in view["blocks"] if b.get("block_id") == block_id)["element"]
    by_text = {o["text"]["text"]: o["value"] for o in element["options"]}
    return [by_text[t] for t in texts]


def has_block(view: dict, block_id: str) -> bool:
    return any(b.get("block_id") == block_id for b in view["blocks"])


def text_of(view: dict) -> str:
    return json.dumps(view["blocks"], ensure_ascii=False)


def fill_connect_page(page, link: str, mailbox, smtp_port: int, password: str) -> None:
    page.goto(link)
    page.fill("#email", f"{mailbox.user}@example.net")
    page.fill("#password", password)
    page.click("summary")
    page.fill("#imap_host", "127.0.0.1")
    page.fill("#imap_port", str(mailbox.server.imaps_port))
    page.select_option("#imap_security", "tls")
    page.fill("#username", mailbox.user)
    page.fill("#smtp_host", "127.0.0.1")
    page.fill("#smtp_port", str(smtp_port))
    page.select_option("#smtp_security", "starttls")
    page.click("#connect")


def test_a_new_user_sets_up_email_sync(slack, mailbox, smtp, page):
    now = dt.datetime.now(dt.UTC)
    for name in ("Projects", "Archive", "Trash"):
        mailbox.create(name)
    client = "Client <Client@CRM.test>"
    mailbox.append("INBOX", make_message(subject="contact recent", sender=client), date=now - 10 * DAY)
    mailbox.append("INBOX", make_message(subject="stranger recent", sender="x@else.test"), date=now - 20 * DAY)
    mailbox.append("INBOX", make_message(subject="contact old", sender=client), date=now - 200 * DAY)
    mailbox.append("Projects", make_message(subject="project contact", to=client), date=now - 5 * DAY)
    mailbox.append("Archive", make_message(subject="archived contact", sender=client), date=now - 5 * DAY)
    import_contacts_csv(slack.services.db, team_id="T0001", text="email,name\nclient@crm.test,Client\n")
    smtp.users[mailbox.user] = mailbox.password
    fake, driver = slack.fake, slack.driver

    assert driver.slash_command("").status_code == 200
    opened = fake.wait_for("views.open")[0]
    view_id = opened.response["view"]["id"]
    assert "Step 1 of 4" in text_of(opened.response["view"])

    # The connect page, in a real browser: a wrong password first costs nothing...
    fill_connect_page(page, link_of(opened.response["view"]), mailbox, smtp.port, "wrong")
    assert "did not accept the sign-in" in page.inner_text("#error")
    assert "app password" in page.inner_text("#error")
    assert page.input_value("#password") == ""  # never echoed back
    # ...then the right one moves the Slack modal on.
    fill_connect_page(page, link_of(opened.response["view"]), mailbox, smtp.port, mailbox.password)
    assert "is connected" in page.inner_text("#done")
    fake.wait_for("views.update", predicate=lambda c: "Step 2 of 4" in text_of(c.args["view"]))

    response = driver.view_submission(
        view_id, {ids.B_TRACKING: {ids.A_TRACKING: ["track_opens"]}, ids.B_VISIBILITY: {ids.A_VISIBILITY: "shared"}}
    )
    assert response.status_code == 200
    assert "Step 3 of 4" in text_of(fake.view(view_id))

    driver.block_action(ids.A_SYNC_MODE, view=view_id, selected_option="labels")
    fake.wait_for("views.update", predicate=lambda c: has_block(c.args["view"], ids.B_FOLDERS))
    folders_view = fake.view(view_id)
    preselected = next(b for b in folders_view["blocks"] if b.get("block_id") == ids.B_FOLDERS)["element"]
    assert [o["text"]["text"] for o in preselected["initial_options"]] == ["INBOX"]
    chosen = option_values(folders_view, ids.B_FOLDERS, ["INBOX", "Projects"])
    driver.view_submission(
        view_id, {ids.B_SYNC_MODE: {ids.A_SYNC_MODE: "labels"}, ids.B_FOLDERS: {ids.A_FOLDERS: chosen}}
    )
    assert "Step 4 of 4" in text_of(fake.view(view_id))
    fake.wait_for("views.update", predicate=lambda c: "This window holds 3 messages" in text_of(c.args["view"]))

    driver.block_action(ids.A_SCOPE, view=view_id, selected_option="contacts")
    fake.wait_for("views.update", predicate=lambda c: "2 of them involve a CRM contact" in text_of(c.args["view"]))

    response = driver.view_submission(
        view_id, {ids.B_START: {ids.A_START: "3m"}, ids.B_SCOPE: {ids.A_SCOPE: "contacts"}}
    )
    assert response.json() == {"response_action": "clear"}
    fake.wait_for("chat.postMessage", predicate=lambda c: "Email sync is set up" in c.args.get("text", ""))

    # The first sync is due at once: one tick of the scheduler (with the worker's Slack notifier) runs it.
    slack.services.notifier = slack_notifier(slack.services)
    deps = slack.services.engine_deps("test")
    deps.config.ssl_context = mailbox.server.ssl_context

    def tick() -> int:
        dispatcher = LocalDispatcher(deps, workers=1, slice_seconds=None)
        claimed = len(Clock(deps, dispatcher, tick_seconds=1).tick())
        dispatcher.shutdown()
        assert slack.services.notifier.flush()  # the notifier's Slack calls go through its sender thread
        return claimed

    assert tick() == 1
    rows = list(export_messages(slack.services.db, account_id=1))
    assert sorted(r["subject"] for r in rows) == ["contact recent", "project contact"]
    assert all(r["visibility"] == "shared" for r in rows)

    # Slack holds the progress message (posted at the start, edited at the end) and the summary.
    progress = next(c for c in fake.calls_to("chat.postMessage") if "Syncing" in c.args.get("text", ""))
    final = fake.messages[(progress.response["channel"], progress.response["ts"])]
    assert "100%" in json.dumps(final) and any(
        c.args["ts"] == progress.response["ts"] for c in fake.calls_to("chat.update")
    )
    assert any("is done in" in c.args.get("text", "") for c in fake.calls_to("chat.postMessage"))
    assert "active" in json.dumps(fake.home_tabs["U0001"])

    # The password changes on the server: one error message with a Reconnect button, however often it fails.
    mailbox.server.set_password(mailbox.user, "new-app-password")
    smtp.users[mailbox.user] = "new-app-password"
    for _ in range(2):
        with session_scope(slack.services.db) as session:
            session.execute(update(EmailAccount).values(next_sync_at=utcnow(), state="active"))
        tick()
    errors = [c for c in fake.calls_to("chat.postMessage") if "stopped" in c.args.get("text", "")]
    assert len(errors) == 1 and "Reconnect" in json.dumps(errors[0].args)
    error_message = fake.messages[(errors[0].response["channel"], errors[0].response["ts"])]
    driver.block_action(ids.A_HOME_RECONNECT, container_message=error_message)
    reconnect = fake.wait_for("views.open", count=2)[-1].response["view"]
    link = next(e["url"] for b in reconnect["blocks"] if b["type"] == "actions" for e in b["elements"])
    fill_connect_page(page, link, mailbox, smtp.port, "new-app-password")
    assert f"{mailbox.user}@example.net is reconnected" in page.inner_text("#done")
    fake.wait_for(
        "chat.postMessage", predicate=lambda c: "reconnected with every setting kept" in c.args.get("text", "")
    )
    with session_scope(slack.services.db) as session:
        account = session.get(EmailAccount, 1)
        assert (account.state, account.sync_mode, account.contact_scope, account.start_option) == (
            "active",
            "labels",
            "contacts",
            "3m",
        )
    mailbox.server.append(mailbox.user, "new-app-password", "INBOX", make_message(subject="after reconnect"))
    assert tick() == 1
    assert "after reconnect" in [r["subject"] for r in export_messages(slack.services.db, account_id=1)]
    # The reconnect's own message was the one message about it.
    assert not [c for c in fake.calls_to("chat.postMessage") if "is syncing again" in c.args.get("text", "")]
