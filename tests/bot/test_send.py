"""Send from Slack with open and click tracking (issue 10), through the served app, the fake Slack,
aiosmtpd, Dovecot and headless Chromium."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from imapclient import IMAPClient
from sqlalchemy import update
from sqlmodel import col, select

from bot import ids
from flows.accounts import AccountDraft, add_account
from flows.contacts import add_contact
from models import sending
from models.db import session_scope
from models.tables import Message, SentEmail, TrackEvent, TrackToken, UserSettings
from sync.imap_session import ImapLogin
from sync.smtp_check import SmtpLogin
from tests.support.mail import make_message
from tests.support.network import LOOPBACK_POLICY
from tests.support.people import Colleague, colleague, sync
from tests.support.slack_app import SlackHarness
from tests.support.smtp import SmtpServer

ALL_TRACKING = ["track_opens", "track_links", "notify_tracking"]
GMAIL_PROXY_UA = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"


@dataclass
class World:
    """Ada (U0001) with a Dovecot mailbox whose outgoing server is the aiosmtpd."""

    slack: SlackHarness
    smtp: SmtpServer
    ada: Colleague
    account_id: int


@pytest.fixture
def world(slack: SlackHarness, smtp: SmtpServer, dovecot: Any) -> Iterator[World]:
    ada = colleague(dovecot, "T0001", "U0001")
    smtp.users[ada.login] = ada.password
    draft = AccountDraft(
        team_id="T0001",
        user_id="U0001",
        email=ada.email,
        imap=ImapLogin(dovecot.host, dovecot.imaps_port, "tls", ada.login, ada.password),
        smtp=SmtpLogin("127.0.0.1", smtp.port, "starttls", ada.login, ada.password),
        start="now",
    )
    account_id = add_account(
        slack.services.db,
        slack.services.secrets,
        draft,
        timeout=10,
        ssl_context=dovecot.ssl_context,
        outbound=LOOPBACK_POLICY,
    )
    ada.account_id = account_id
    sync(slack.services, ada)
    add_contact(slack.services.db, team_id="T0001", email="grace@example.org", name="Grace Hopper")
    yield World(slack, smtp, ada, account_id)


def rich(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"rich_text_value": {"type": "rich_text", "elements": list(elements)}}


def text(value: str, **style: bool) -> dict[str, Any]:
    return {"type": "text", "text": value, **({"style": style} if style else {})}


def link(url: str, label: str | None = None) -> dict[str, Any]:
    return {"type": "link", "url": url, **({"text": label} if label is not None else {})}


def open_compose(w: World, command: str = "send") -> dict[str, Any]:
    before = len(w.slack.fake.calls_to("views.open"))
    w.slack.driver.slash_command(command)
    return w.slack.fake.wait_for("views.open", count=before + 1)[-1].response["view"]


def submit(
    w: World,
    modal: dict[str, Any],
    *,
    to: list[str],
    cc: list[str] | None = None,
    subject: str = "Proposal",
    body: dict[str, Any] | None = None,
    tracking: list[str] | None = None,
    strict: bool = True,
) -> httpx.Response:
    values: dict[str, Any] = {
        ids.B_SEND_FROM: {ids.A_SEND_FROM: str(w.account_id)},
        ids.B_SEND_TO: {ids.A_SEND_TO: to},
        ids.B_SEND_SUBJECT: {ids.A_SEND_SUBJECT: subject},
        ids.B_SEND_BODY: {ids.A_SEND_BODY: body or rich({"type": "rich_text_section", "elements": [text("Hi")]})},
    }
    if cc:
        values[ids.B_SEND_CC] = {ids.A_SEND_CC: cc}
    if tracking is not None:
        values[ids.B_SEND_TRACKING] = {ids.A_SEND_TRACKING: tracking}
    elif not strict:  # a forged submission: the tracking switches as Slack would send them, though not shown
        values[ids.B_SEND_TRACKING] = {
            ids.A_SEND_TRACKING: {"type": "checkboxes", "selected_options": [{"value": v} for v in ALL_TRACKING]}
        }
    return w.slack.driver.view_submission(modal["id"], values, strict=strict)


def send(w: World, **kwargs: Any) -> str:
    """Compose and send; return the text of the result the modal shows."""
    updates = len(w.slack.fake.calls_to("views.update"))
    modal = open_compose(w)
    kwargs.setdefault("tracking", ALL_TRACKING)
    response = submit(w, modal, **kwargs)
    assert response.json()["response_action"] == "update", response.text
    view = w.slack.fake.wait_for("views.update", count=updates + 1, timeout=30)[-1].args["view"]
    return json.dumps(view if isinstance(view, dict) else json.loads(view))


def received(w: World) -> list[tuple[list[str], email.message.EmailMessage]]:
    out = []
    for envelope in w.smtp.received:
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        out.append((list(envelope.rcpt_tos), msg))
    return out


def html_of(msg: email.message.Message) -> str:
    part = msg.get_body(preferencelist=("html",))  # type: ignore[attr-defined]
    return str(part.get_content())


def plain_of(msg: email.message.Message) -> str:
    part = msg.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
    return str(part.get_content())


def last_sent(w: World) -> SentEmail:
    with session_scope(w.slack.services.db, readonly=True) as session:
        row = session.exec(select(SentEmail).order_by(col(SentEmail.id).desc())).first()
        assert row is not None
        session.expunge(row)
        return row


def backdate(w: World, sent_id: int, seconds: float = 120) -> None:
    with session_scope(w.slack.services.db) as session:
        row = session.get(SentEmail, sent_id)
        assert row is not None
        row.sent_at -= dt.timedelta(seconds=seconds)
        session.add(row)


def events(w: World, sent_id: int) -> list[TrackEvent]:
    with session_scope(w.slack.services.db, readonly=True) as session:
        rows = list(sending.events_of(session, sent_email_id=sent_id))
        for row in rows:
            session.expunge(row)
        return rows


def tokens_in(html: str) -> list[str]:
    return re.findall(r"/t/o/([A-Za-z0-9_.-]+)\.gif", html)


def tracking_dms(w: World) -> list[Any]:
    return [
        c
        for c in w.slack.fake.calls_to("chat.postMessage")
        if "opened" in str(c.args.get("text", "")) or "clicked" in str(c.args.get("text", ""))
    ]


BODY = rich(
    {
        "type": "rich_text_section",
        "elements": [
            text("Hello "),
            text("Grace", bold=True),
            text(", please read "),
            link("https://example.com/proposal?a=1&b=2", "our proposal"),
            text(" "),
            text("soon", italic=True),
            text(". Call "),
            link("tel:+441234", "me"),
            text(" or "),
            link("mailto:ada@example.net", "write"),
            text(". Also "),
            link("https://example.com/visible", "https://example.com/visible"),
            text(" and "),
            text("make test", code=True),
        ],
    },
    {
        "type": "rich_text_list",
        "style": "bullet",
        "elements": [
            {"type": "rich_text_section", "elements": [text("first point")]},
            {"type": "rich_text_section", "elements": [text("second point")]},
        ],
    },
)


# 1 ------------------------------------------------------------------------------------------------------
def test_compose_sends_once_per_recipient_with_its_own_tokens_and_saves_one_linked_copy(world: World) -> None:
    w = world
    modal = open_compose(w, "send grace@example.org")
    to_element = next(b for b in modal["blocks"] if b["block_id"] == ids.B_SEND_TO)["element"]
    assert [o["value"] for o in to_element["initial_options"]] == ["grace@example.org"]
    # The To select offers the team's contacts by name, and any address typed.
    options = w.slack.driver.block_suggestion(ids.A_SEND_TO, "grac", view=modal["id"]).json()["options"]
    assert [o["value"] for o in options] == ["grace@example.org"]
    typed = w.slack.driver.block_suggestion(ids.A_SEND_TO, "Bob@Example.com", view=modal["id"]).json()["options"]
    assert typed[0]["value"] == "bob@example.com"
    # An invalid address is an inline error, and nothing is sent.
    bad = submit(w, modal, to=["grace@example.org", "bob@example"], tracking=ALL_TRACKING)
    assert bad.json() == {
        "response_action": "errors",
        "errors": {ids.B_SEND_TO: "bob@example is not a valid email address."},
    }
    assert w.smtp.received == []

    updates = len(w.slack.fake.calls_to("views.update"))
    ok = submit(
        w,
        modal,
        to=["grace@example.org", "bob@example.com"],
        cc=["carol@example.com"],
        body=BODY,
        tracking=ALL_TRACKING,
    )
    assert ok.json()["response_action"] == "update"
    result = json.dumps(w.slack.fake.wait_for("views.update", count=updates + 1, timeout=30)[-1].args["view"])
    assert "was sent to grace@example.org, bob@example.com, carol@example.com" in result

    got = received(w)
    assert sorted(r for rcpts, _ in got for r in rcpts) == ["bob@example.com", "carol@example.com", "grace@example.org"]
    assert all(len(rcpts) == 1 for rcpts, _ in got)  # one SMTP transaction per recipient
    sent = last_sent(w)
    all_tokens = []
    for _rcpts, msg in got:
        assert msg["To"] == "grace@example.org, bob@example.com"
        assert msg["Cc"] == "carol@example.com"
        assert msg["From"] == w.ada.email
        assert msg["Subject"] == "Proposal"
        assert msg["Message-ID"] == sent.message_id and msg["Date"]
        html, plain = html_of(msg), plain_of(msg)
        toks = tokens_in(html)
        assert len(toks) == 1  # one pixel
        all_tokens += toks
        assert f"/t/c/{toks[0]}/0" in html and "https://example.com/proposal" not in html
        assert 'href="mailto:ada@example.net"' in html and 'href="tel:+441234"' in html
        assert 'href="https://example.com/visible"' in html  # its visible text is a URL: left alone
        assert "<b>Grace</b>" in html and "<i>soon</i>" in html and "<code>make test</code>" in html
        assert "<ul><li>first point</li><li>second point</li></ul>" in html
        # The plain-text part is untouched: the real link, no tracking URL.
        assert "our proposal <https://example.com/proposal?a=1&b=2>" in plain and "/t/" not in plain
        assert "*Grace*" in plain and "- first point" in plain
    assert len(set(all_tokens)) == 3  # each recipient has their own token

    # The untracked copy is in Sent (Dovecot is not Gmail or Microsoft) ...
    with IMAPClient(w.ada.server.host, port=w.ada.server.imaps_port, ssl_context=w.ada.server.ssl_context()) as imap:
        imap.login(w.ada.login, w.ada.password)
        imap.select_folder("Sent")
        uids = imap.search(["HEADER", "Message-ID", sent.message_id])
        assert len(uids) == 1
        copy = imap.fetch(uids, ["RFC822"])[uids[0]][b"RFC822"]
    assert b"/t/o/" not in copy and b"https://example.com/proposal" in copy
    # ... and the next sync stores it once, linked to the tracked email by Message-ID.
    sync(w.slack.services, w.ada)
    sync(w.slack.services, w.ada)
    with session_scope(w.slack.services.db, readonly=True) as session:
        stored = session.exec(select(Message).where(Message.message_id == sent.message_id)).all()
        assert len(stored) == 1 and stored[0].direction == "sent"
        assert sending.linked_messages(session, sent) == [stored[0].id]
    # The App Home lists it.
    w.slack.driver.app_home_opened()
    home = w.slack.fake.wait_for("views.publish")[-1].args["view"]
    assert "Sent from Slack" in json.dumps(home) and "0 opens" in json.dumps(home)


# 2 ------------------------------------------------------------------------------------------------------
def test_chromium_opens_and_clicks_one_dm_then_edited(world: World, page: Any) -> None:
    w = world
    target = f"{w.slack.base_url}/healthz?from=mail"
    body = rich({"type": "rich_text_section", "elements": [text("See "), link(target, "the status")]})
    send(w, to=["grace@example.org"], body=body)
    sent = last_sent(w)
    assert sent.id is not None
    backdate(w, sent.id)  # the person reads it a while after it was sent
    html = html_of(received(w)[0][1])
    with page.expect_response(re.compile(r"/t/o/.*\.gif")):
        page.set_content(html)
    dm = w.slack.fake.wait_for("chat.postMessage", predicate=lambda c: "opened" in str(c.args.get("text")))
    assert "Grace Hopper opened *Proposal*" in dm[0].args["text"]
    with page.expect_navigation():
        page.click("text=the status")
    assert page.url == target
    assert '"database"' in page.content()
    evs = events(w, sent.id)
    assert [(e.kind, e.human, e.link) for e in evs] == [("open", True, None), ("click", True, 0)]
    # A second open (the mail opened again later) edits the one DM.
    again = page.context.new_page()
    with again.expect_response(re.compile(r"/t/o/.*\.gif")):
        again.set_content(html)
    w.slack.fake.wait_for("chat.update", predicate=lambda c: "opened 2" in str(c.args.get("text")))
    assert len(tracking_dms(w)) == 1
    with session_scope(w.slack.services.db, readonly=True) as session:
        row = session.get(SentEmail, sent.id)
        assert row is not None and row.opens == 2 and row.clicks == 1


# 3 ------------------------------------------------------------------------------------------------------
def test_machine_events_are_recorded_with_their_reason_and_never_notified(world: World) -> None:
    w = world
    send(w, to=["grace@example.org"])
    sent = last_sent(w)
    assert sent.id is not None
    token = tokens_in(html_of(received(w)[0][1]))[0]
    pixel = f"{w.slack.base_url}/t/o/{token}.gif"
    with httpx.Client() as http:
        assert http.get(pixel, headers={"User-Agent": BROWSER_UA}).status_code == 200  # within a second: too soon
        backdate(w, sent.id)
        head = http.head(pixel, headers={"User-Agent": BROWSER_UA})
        assert head.status_code == 200 and head.headers["content-type"] == "image/gif"
        http.get(pixel, headers={"User-Agent": "Mozilla/5.0"})
        http.get(pixel, headers={"User-Agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"})
        click = http.get(f"{w.slack.base_url}/t/c/{token}/0", headers={"User-Agent": "python-requests/2.31"})
    reasons = [(e.kind, e.human, e.reason) for e in events(w, sent.id)]
    assert reasons == [
        ("open", False, "too_soon"),
        ("open", False, "head"),
        ("open", False, "apple_mpp"),
        ("open", False, "scanner"),
    ]
    assert click.status_code == 404  # no link in this email
    time.sleep(0.5)
    assert tracking_dms(w) == []
    # Gmail's image proxy is a person opening it.
    with httpx.Client() as http:
        http.get(
            pixel,
            headers={"User-Agent": GMAIL_PROXY_UA},
        )
    assert events(w, sent.id)[-1].human is True
    w.slack.fake.wait_for("chat.postMessage", predicate=lambda c: "opened" in str(c.args.get("text")))


# 4 ------------------------------------------------------------------------------------------------------
def test_unknown_and_altered_tokens_and_unsafe_stored_targets(world: World) -> None:
    w = world
    body = rich({"type": "rich_text_section", "elements": [link("https://example.com/a", "a link")]})
    send(w, to=["grace@example.org"], body=body)
    sent = last_sent(w)
    assert sent.id is not None
    backdate(w, sent.id)
    token = tokens_in(html_of(received(w)[0][1]))[0]
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    forged = "x" * 22 + "." + "y" * 14
    with httpx.Client(follow_redirects=False) as http:
        for bad in (altered, forged, "nonsense", token + "0"):
            gif = http.get(f"{w.slack.base_url}/t/o/{bad}.gif", headers={"User-Agent": BROWSER_UA})
            assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
            assert gif.headers["cache-control"].startswith("no-store") and gif.content.startswith(b"GIF89a")
            assert http.get(f"{w.slack.base_url}/t/c/{bad}/0").status_code == 404
        assert http.get(f"{w.slack.base_url}/t/c/{token}/1").status_code == 404  # no such link
        assert http.get(f"{w.slack.base_url}/t/c/{token}/-1").status_code == 404
        good = http.get(f"{w.slack.base_url}/t/c/{token}/0", headers={"User-Agent": BROWSER_UA})
        assert good.status_code == 302 and good.headers["location"] == "https://example.com/a"
        # Targets are only what the database holds; a javascript: or data: target is never redirected to.
        with session_scope(w.slack.services.db) as session:
            session.exec(
                update(SentEmail)
                .where(col(SentEmail.id) == sent.id)
                .values(links=json.dumps(["javascript:alert(1)", "data:text/html,<b>x</b>", " JavaScript:x"]))
            )
        for n in range(3):
            answer = http.get(f"{w.slack.base_url}/t/c/{token}/{n}")
            assert answer.status_code == 404 and "location" not in answer.headers
    assert [(e.kind, e.link) for e in events(w, sent.id)] == [("click", 0)]  # the unknown ones recorded nothing


# 5 ------------------------------------------------------------------------------------------------------
def test_tracking_off_per_email_per_person_and_per_workspace(world: World) -> None:
    w = world
    # Per email: the switches unticked in the modal; that choice becomes the person's default.
    send(w, to=["grace@example.org"], body=BODY, tracking=[])
    html = html_of(received(w)[-1][1])
    assert "/t/" not in html and 'href="https://example.com/proposal?a=1&amp;b=2"' in html
    with session_scope(w.slack.services.db, readonly=True) as session:
        prefs = session.get(UserSettings, ("T0001", "U0001"))
        assert prefs is not None and (prefs.track_opens, prefs.track_links, prefs.notify_tracking) == (
            False,
            False,
            False,
        )
    # Per person: the next modal starts from those defaults.
    modal = open_compose(w)
    block = next(b for b in modal["blocks"] if b.get("block_id") == ids.B_SEND_TRACKING)
    assert "initial_options" not in block["element"]
    # Opens only: a pixel, no rewritten link.
    send(w, to=["grace@example.org"], body=BODY, tracking=["track_opens"])
    html = html_of(received(w)[-1][1])
    assert len(tokens_in(html)) == 1 and "/t/c/" not in html
    # Per workspace: only an admin turns it off; then no switches, and no pixel even for a forged submission.
    w.slack.driver.slash_command("tracking off")
    refused = w.slack.fake.wait_for("response_url")[-1]
    assert "Only a workspace admin" in json.dumps(refused.args)
    w.slack.fake.users["U0001"] = {"is_admin": True}
    w.slack.driver.slash_command("tracking off")
    w.slack.fake.wait_for("response_url", count=2)
    modal = open_compose(w)
    assert all(b.get("block_id") != ids.B_SEND_TRACKING for b in modal["blocks"])
    updates = len(w.slack.fake.calls_to("views.update"))
    forged = submit(w, modal, to=["grace@example.org"], body=BODY, strict=False)
    assert forged.status_code == 200
    assert forged.json()["response_action"] == "update"
    w.slack.fake.wait_for("views.update", count=updates + 1, timeout=30)
    html = html_of(received(w)[-1][1])
    assert "/t/" not in html
    assert len(received(w)) == 3


# 6 ------------------------------------------------------------------------------------------------------
def test_a_synced_reply_stops_the_notifications(world: World) -> None:
    w = world
    send(w, to=["grace@example.org"])
    sent = last_sent(w)
    assert sent.id is not None
    backdate(w, sent.id)
    token = tokens_in(html_of(received(w)[0][1]))[0]
    raw = make_message(
        subject="Re: Proposal",
        sender="Grace Hopper <grace@example.org>",
        to=w.ada.email,
        extra_headers={"In-Reply-To": sent.message_id, "References": sent.message_id},
    )
    w.ada.server.append(w.ada.login, w.ada.password, "INBOX", raw)
    sync(w.slack.services, w.ada)
    with httpx.Client() as http:
        http.get(f"{w.slack.base_url}/t/o/{token}.gif", headers={"User-Agent": BROWSER_UA})
    evs = events(w, sent.id)
    assert len(evs) == 1 and evs[0].human  # still recorded as a person's open ...
    time.sleep(0.5)
    assert tracking_dms(w) == []  # ... but no longer told

    # Thirty days after sending, opens are recorded but no longer told either.
    send(w, to=["bob@example.com"], subject="Old news")
    old = last_sent(w)
    assert old.id is not None and old.id != sent.id
    backdate(w, old.id, seconds=31 * 86400)
    old_token = tokens_in(html_of(received(w)[-1][1]))[0]
    with httpx.Client() as http:
        http.get(f"{w.slack.base_url}/t/o/{old_token}.gif", headers={"User-Agent": BROWSER_UA})
    assert [e.human for e in events(w, old.id)] == [True]
    time.sleep(0.5)
    assert tracking_dms(w) == []


# 7 ------------------------------------------------------------------------------------------------------
def test_smtp_failures_name_who_got_it_and_nothing_is_sent_twice(world: World) -> None:
    w = world
    handler = w.smtp.controller.handler
    # A wrong password: nothing is sent, and the modal says why.
    w.smtp.users[w.ada.login] = "changed"
    result = send(w, to=["grace@example.org"])
    assert "rejected the username or password" in result and "was not sent to anyone" in result
    assert w.smtp.received == []
    # The modal was closed meanwhile (views.update fails): the person is told in a DM instead.
    w.slack.fake.fail_next("views.update", error="not_found")
    modal = open_compose(w)
    submit(w, modal, to=["grace@example.org"], tracking=[])
    dm = w.slack.fake.wait_for("chat.postMessage", predicate=lambda c: "not sent to anyone" in json.dumps(c.args))
    assert "rejected the username or password" in json.dumps(dm[-1].args) and dm[-1].args["channel"] == "U0001"
    w.smtp.users[w.ada.login] = w.ada.password

    # A rejected recipient: the others get it; the refused one is named.
    async def refuse_bad(server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    handler.handle_RCPT = refuse_bad
    try:
        result = send(w, to=["grace@example.org", "nobody@example.org"])
    finally:
        del handler.handle_RCPT
    assert "was sent to grace@example.org only" in result
    assert "nobody@example.org: the server refused the address (550)" in result
    assert [r for r, _ in received(w)] == [["grace@example.org"]]
    assert last_sent(w).status == "partial"

    # Too large for the server's SIZE: refused before anything is sent.
    w.smtp.controller.SMTP_kwargs["data_size_limit"] = 1500
    try:
        result = send(
            w, to=["grace@example.org"], body=rich({"type": "rich_text_section", "elements": [text("x" * 4000)]})
        )
    finally:
        w.smtp.controller.SMTP_kwargs.pop("data_size_limit")
    assert "the server takes at most" in result and "was not sent to anyone" in result
    assert len(received(w)) == 1

    # The server closes the connection after the first recipient: the others are named, never retried.
    original = handler.handle_DATA
    calls = {"n": 0}

    async def close_after_first(server: Any, session: Any, envelope: Any) -> str:
        calls["n"] += 1
        if calls["n"] > 1:
            server.transport.close()
            return "421 closing"
        return await original(server, session, envelope)

    handler.handle_DATA = close_after_first
    try:
        result = send(w, to=["grace@example.org", "bob@example.com", "carol@example.com"])
    finally:
        del handler.handle_DATA
    assert "was sent to grace@example.org only" in result
    assert "bob@example.com: the server closed the connection" in result
    assert "carol@example.com: the server closed the connection" in result
    assert len(received(w)) == 2
    sent = last_sent(w)
    # The same modal submitted again sends nothing (one submission, one send).
    from bot.actions.send import send_config
    from flows import send as send_flow

    again = send_flow.send(
        w.slack.services.db,
        w.slack.services.secrets,
        send_config(w.slack.deps),
        send_flow.Draft(
            team_id="T0001",
            user_id="U0001",
            account_id=w.account_id,
            to=["bob@example.com"],
            cc=[],
            subject="x",
            body=None,
            track_opens=True,
            track_links=True,
            notify=True,
            compose_key=sent.compose_key,
        ),
    )
    assert again.error == "This email was already sent." and len(received(w)) == 2
    assert calls["n"] == 2
    with session_scope(w.slack.services.db, readonly=True) as session:
        assert session.exec(select(TrackToken).where(TrackToken.sent_email_id == sent.id)).all()


# Compose entry points: the global shortcut, the message shortcut, and Reply on a synced email.
def test_shortcuts_and_reply_with_in_reply_to_references_and_quoted_text(world: World) -> None:
    w = world
    opened = len(w.slack.fake.calls_to("views.open"))
    payload = {
        "type": "shortcut",
        "callback_id": ids.SHORTCUT_SEND,
        "trigger_id": w.slack.fake.issue_trigger_id("U0001"),
        "team": {"id": "T0001", "domain": "test"},
        "user": {"id": "U0001", "team_id": "T0001", "username": "u0001"},
        "api_app_id": w.slack.driver.api_app_id,
        "token": "fake-verification-token",
        "action_ts": f"{time.time():.6f}",
        "is_enterprise_install": False,
        "enterprise": None,
    }
    assert w.slack.driver._post_payload(payload).status_code == 200
    view = w.slack.fake.wait_for("views.open", count=opened + 1)[-1].response["view"]
    assert view["callback_id"] == ids.SEND_VIEW

    modal = open_compose(w, "send <mailto:grace@example.org|grace@example.org>")  # as Slack may format it
    to = next(b for b in modal["blocks"] if b["block_id"] == ids.B_SEND_TO)["element"]["initial_options"]
    assert [o["value"] for o in to] == ["grace@example.org"]
    opened += 1

    w.slack.driver.message_shortcut(ids.SHORTCUT_SEND_MESSAGE, {"text": "Numbers for Q3 are in", "user": "U0002"})
    view = w.slack.fake.wait_for("views.open", count=opened + 2)[-1].response["view"]
    body = next(b for b in view["blocks"] if b["block_id"] == ids.B_SEND_BODY)["element"]["initial_value"]
    assert "Numbers for Q3 are in" in json.dumps(body)

    original = "<q3.question@example.org>"
    raw = make_message(
        subject="Q3 numbers?",
        sender="Grace Hopper <grace@example.org>",
        to=w.ada.email,
        message_id=original,
        body="Could you send the Q3 numbers?\n",
    )
    w.ada.server.append(w.ada.login, w.ada.password, "INBOX", raw)
    sync(w.slack.services, w.ada)
    with session_scope(w.slack.services.db, readonly=True) as session:
        message = session.exec(select(Message).where(Message.message_id == original)).one()
    w.slack.driver.block_action(ids.A_REPLY, value=str(message.id), strict=False)
    modal = w.slack.fake.wait_for("views.open", count=opened + 3)[-1].response["view"]
    to = next(b for b in modal["blocks"] if b["block_id"] == ids.B_SEND_TO)["element"]["initial_options"]
    assert [o["value"] for o in to] == ["grace@example.org"]
    subject = next(b for b in modal["blocks"] if b["block_id"] == ids.B_SEND_SUBJECT)["element"]["initial_value"]
    assert subject == "Re: Q3 numbers?"
    quoted = next(b for b in modal["blocks"] if b["block_id"] == ids.B_SEND_BODY)["element"]["initial_value"]
    updates = len(w.slack.fake.calls_to("views.update"))
    submit(w, modal, to=["grace@example.org"], subject=subject, body={"rich_text_value": quoted}, tracking=[])
    w.slack.fake.wait_for("views.update", count=updates + 1, timeout=30)
    msg = received(w)[-1][1]
    assert msg["In-Reply-To"] == original and original in msg["References"]
    assert "> Could you send the Q3 numbers?" in plain_of(msg) and "Grace Hopper wrote:" in plain_of(msg)
    assert "<blockquote" in html_of(msg)

    # Someone else's Reply on Ada's private email (a forged id) quotes nothing from it.
    w.slack.driver.block_action(ids.A_REPLY, value=str(message.id), user_id="U0002", strict=False)
    modal = w.slack.fake.wait_for("views.open", count=opened + 4)[-1].response["view"]
    assert "Q3" not in json.dumps(modal) and not modal["private_metadata"]
    from flows import send as send_flow

    with pytest.raises(send_flow.ComposeError):
        send_flow.reply_defaults(w.slack.services.db, team_id="T0001", user_id="U0002", message_id=message.id)


def test_operator_switch_own_size_limit_and_rate_limit(world: World) -> None:
    import dataclasses

    from bot.actions.send import send_config
    from flows import send as send_flow

    w = world
    base = send_config(w.slack.deps)

    def draft(key: str, body: dict[str, Any] | None = None) -> send_flow.Draft:
        return send_flow.Draft(
            team_id="T0001",
            user_id="U0001",
            account_id=w.account_id,
            to=["grace@example.org"],
            cc=[],
            subject="x",
            body=(body or BODY)["rich_text_value"],
            track_opens=True,
            track_links=True,
            notify=True,
            compose_key=key,
        )

    db, box = w.slack.services.db, w.slack.services.secrets
    # EMAILSYNC_TRACKING=false: no pixel, no rewritten link, whatever the person chose.
    result = send_flow.send(db, box, dataclasses.replace(base, tracking_allowed=False), draft("k1"))
    assert result.delivered == ["grace@example.org"] and not result.tracked
    assert "/t/" not in html_of(received(w)[-1][1])
    # Over our own size limit: refused before anything is sent.
    result = send_flow.send(db, box, dataclasses.replace(base, max_bytes=500), draft("k2"))
    assert result.delivered == [] and result.error and "at most" in result.error
    assert len(received(w)) == 1
    # Rate limit per account.
    with pytest.raises(send_flow.ComposeError, match="in the last hour"):
        send_flow.send(db, box, dataclasses.replace(base, sends_per_hour=2), draft("k3"))
    assert len(received(w)) == 1


def test_the_senders_own_copy_is_recorded_as_theirs_and_not_notified(world: World) -> None:
    w = world
    send(w, to=["grace@example.org"], cc=[w.ada.email])
    sent = last_sent(w)
    assert sent.id is not None
    backdate(w, sent.id)
    own = next(msg for rcpts, msg in received(w) if rcpts == [w.ada.email])
    token = tokens_in(html_of(own))[0]
    with httpx.Client() as http:
        http.get(f"{w.slack.base_url}/t/o/{token}.gif", headers={"User-Agent": BROWSER_UA})
    assert [(e.human, e.reason) for e in events(w, sent.id)] == [(False, "sender")]
    time.sleep(0.5)
    assert tracking_dms(w) == []


def test_more_than_ten_recipients_are_tracked_per_message(world: World) -> None:
    w = world
    people = [f"p{i}@example.org" for i in range(11)]
    send(w, to=people[:6], cc=people[6:])
    got = received(w)
    assert len(got) == 1 and sorted(got[0][0]) == sorted(people)  # one transaction for everyone
    tokens = tokens_in(html_of(got[0][1]))
    assert len(tokens) == 1
    sent = last_sent(w)
    assert sent.id is not None and not sent.per_recipient
    backdate(w, sent.id)
    with httpx.Client() as http:
        http.get(f"{w.slack.base_url}/t/o/{tokens[0]}.gif", headers={"User-Agent": BROWSER_UA})
    dm = w.slack.fake.wait_for("chat.postMessage", predicate=lambda c: "opened" in str(c.args.get("text")))
    assert dm[-1].args["text"].startswith(":eyes: Someone opened *Proposal*")
