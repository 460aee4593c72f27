"""The weekly "people who are not contacts yet" DM over two seeded weeks of real mail (Dovecot, the real app)."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

from sqlmodel import col, select

from bot import ids
from bot.digest import PeopleDigestJob
from flows import lifecycle
from flows import team as team_flow
from flows.contacts import add_contact
from models.db import session_scope
from models.tables import Contact, IgnoredAddress, PeopleDigest, UserSettings
from tests.support.people import Colleague, colleague, connect, sync

BERLIN = ZoneInfo("Europe/Berlin")  # the fake Slack's users.info time zone


def last_monday_9(now: dt.datetime) -> dt.datetime:
    """The latest Monday 09:00 in Berlin before now (the default digest day and hour)."""
    local = now.astimezone(BERLIN)
    day = (local - dt.timedelta(days=local.weekday())).date()
    at = dt.datetime.combine(day, dt.time(9), tzinfo=BERLIN)
    return at if at <= local else at - dt.timedelta(days=7)


def seed_week(
    alice: Colleague, end: dt.datetime, mail: dict[str, tuple[str, int, int]], **extra: dict[str, str]
) -> None:
    """For each address: (display name, received, sent) emails in the week before `end`."""
    hour = dt.timedelta(hours=1)
    for n, (address, (name, received, sent)) in enumerate(mail.items()):
        for i in range(received):
            alice.receive(
                f"From {address} {i}",
                sender=f"{name} <{address}>",
                at=end - (n * 5 + i + 2) * hour,
                extra=extra.get(address),
            )
        for i in range(sent):
            alice.send(f"To {address} {i}", to=f"{name} <{address}>", at=end - (n * 5 + i + 3) * hour)


def dm_text(app, channel: str, ts: str) -> str:
    return json.dumps(app.fake.messages[(channel, ts)], ensure_ascii=False)


def names_in(message: dict) -> list[str]:
    """The addresses the digest lists, in order."""
    out = []
    for block in message["blocks"][1:]:
        text = (block.get("text") or {}).get("text", "")
        if block["type"] == "section" and "&lt;" in text:
            out.append(text.split("&lt;")[-1].split("&gt;")[0])
    return out


def test_weekly_digest_suggests_add_and_ignore(slack, dovecot):
    app = slack
    week2_end = last_monday_9(dt.datetime.now(dt.UTC))
    week1_end = week2_end - dt.timedelta(days=7)
    alice = colleague(dovecot, "T0001", "UALICE")
    bob = colleague(dovecot, "T0001", "UBOB")
    seed_week(
        alice,
        week1_end,
        {
            "pat@client.com": ("Pat Client", 3, 2),
            "sam@prospect.io": ("Sam Prospect", 1, 2),
            "lee@partner.org": ("Lee Partner", 2, 0),
            "once@single.com": ("Just Once", 1, 0),  # one email: not enough
            "known@customer.com": ("Known", 4, 0),  # a team contact already
            "boss@spam.biz": ("Blocked", 3, 0),  # blocked by Alice after the sync
            "news@letters.com": ("Newsletter", 3, 0),  # List-Id
            "deals@shop.com": ("Deals", 3, 0),  # Precedence: bulk
            "no-reply@service.com": ("Service", 3, 0),
            bob.email: ("Bob", 0, 3),  # a colleague with a mailbox
            "carl@example.net": ("Carl", 2, 0),  # Alice's own domain: a colleague
        },
        **{"news@letters.com": {"List-Id": "Letters <letters.example.com>"}, "deals@shop.com": {"Precedence": "bulk"}},
    )
    # Before the week: not counted.
    alice.receive("Old news", sender="Pat Client <pat@client.com>", at=week1_end - dt.timedelta(days=8))
    seed_week(
        alice,
        week2_end,
        {
            "pat@client.com": ("Pat Client", 2, 0),
            "sam@prospect.io": ("Sam Prospect", 2, 0),  # a contact by then
            "lee@partner.org": ("Lee Partner", 3, 0),  # ignored by then
            "quinn@new.co": ("Quinn New", 1, 1),
        },
    )
    for person in (alice, bob):
        connect(app.services, person, visibility="private")
        sync(app.services, person)
    add_contact(app.services.db, team_id="T0001", email="known@customer.com", name="Known")
    lifecycle.save_general_settings(app.services.db, team_id="T0001", user_id=alice.user_id, blocked=["spam.biz"])
    job = PeopleDigestJob(app.services.db, lambda _team: app.deps.client)

    # Week 1: exactly the expected people, most emails first; Bob has no mail, so no DM.
    assert job.run_once(now=week1_end + dt.timedelta(minutes=5)) == 1
    post = app.fake.wait_for("chat.postMessage")[-1]
    assert post.args["channel"] == alice.user_id
    channel, ts = post.response["channel"], post.response["ts"]
    message = app.fake.messages[(channel, ts)]
    assert names_in(message) == ["pat@client.com", "sam@prospect.io", "lee@partner.org"]
    text = dm_text(app, channel, ts)
    assert "5 emails · 3 received, 2 sent" in text and "3 emails · 1 received, 2 sent" in text
    with session_scope(app.services.db) as session:
        assert session.get(UserSettings, ("T0001", alice.user_id)).timezone == "Europe/Berlin"
    # Once per week, however often the job runs.
    assert job.run_once(now=week1_end + dt.timedelta(minutes=10)) == 0
    assert len(app.fake.calls_to("chat.postMessage")) == 1

    # Bob cannot act on Alice's digest (a forged click): nothing opens, nothing is ignored.
    sam_value = next(
        e["value"]
        for b in message["blocks"]
        for e in b.get("elements", [])
        if e.get("action_id") == ids.A_DIGEST_ADD and "sam@" in e["value"]
    )
    for action in (ids.A_DIGEST_ADD, ids.A_DIGEST_IGNORE):
        app.driver.block_action(action, value=sam_value, user_id=bob.user_id, strict=False, block_id="digest_1")
    refusals = app.fake.wait_for("chat.postEphemeral", count=2)
    assert all("no longer yours" in c.args["text"] for c in refusals)
    assert app.fake.calls_to("views.open") == []

    # Add as contact: the name comes prefilled, Alice edits it; the contact links Sam's mail; the DM shows it.
    app.driver.block_action(ids.A_DIGEST_ADD, container_message=message, block_id="digest_1", user_id=alice.user_id)
    modal = app.fake.wait_for("views.open")[-1].response["view"]
    name_block = next(b for b in modal["blocks"] if b.get("block_id") == ids.B_CONTACT_NAME)
    assert name_block["element"]["initial_value"] == "Sam Prospect"
    response = app.driver.view_submission(modal["id"], {ids.B_CONTACT_NAME: {ids.A_CONTACT_NAME: "Samantha Prospect"}})
    assert response.json()["response_action"] == "update"
    assert "5 synced emails are linked" in json.dumps(response.json())  # both weeks of her mail, at once
    with session_scope(app.services.db) as session:
        contact = session.exec(select(Contact).where(col(Contact.email) == "sam@prospect.io")).one()
        assert (contact.team_id, contact.name, contact.source) == ("T0001", "Samantha Prospect", "digest")
    app.fake.wait_for("chat.update")
    assert "Added as a contact · 5 synced emails linked" in dm_text(app, channel, ts)

    # Ignore: the DM says so, and it sticks.
    app.driver.block_action(
        ids.A_DIGEST_IGNORE,
        container_message=app.fake.messages[(channel, ts)],
        block_id="digest_2",
        user_id=alice.user_id,
    )
    app.fake.wait_for("chat.update", count=2)
    assert "Ignored: I won't suggest this address again" in dm_text(app, channel, ts)
    with session_scope(app.services.db) as session:
        assert session.exec(select(IgnoredAddress.email)).all() == ["lee@partner.org"]

    # Week 2: Sam is a contact, Lee is ignored.
    assert job.run_once(now=week2_end + dt.timedelta(minutes=5)) == 1
    post = app.fake.wait_for("chat.postMessage", count=2)[-1]
    assert names_in(app.fake.messages[(post.response["channel"], post.response["ts"])]) == [
        "pat@client.com",
        "quinn@new.co",
    ]
    with session_scope(app.services.db) as session:
        rows = session.exec(select(PeopleDigest).order_by(col(PeopleDigest.id))).all()
        # Bob's weeks had nobody to suggest: recorded (so no tick counts again), never posted.
        assert [(r.user_id, r.slack_ts is not None, r.suggestions == "[]") for r in rows] == [
            (alice.user_id, True, False),
            (bob.user_id, False, True),
            (alice.user_id, True, False),
            (bob.user_id, False, True),
        ]


def test_digest_off_and_no_dm_when_slack_refuses_then_retried(slack, dovecot):
    app = slack
    end = last_monday_9(dt.datetime.now(dt.UTC))
    alice = colleague(dovecot, "T0001", "UALICE")
    seed_week(alice, end, {"pat@client.com": ("Pat Client", 2, 1)})
    connect(app.services, alice, visibility="private")
    sync(app.services, alice)
    job = PeopleDigestJob(app.services.db, lambda _team: app.deps.client)

    app.fake.fail_next("chat.postMessage", error="channel_not_found")
    assert job.run_once(now=end + dt.timedelta(minutes=5)) == 0
    assert job.run_once(now=end + dt.timedelta(minutes=10)) == 1  # the failed week was not used up

    # Off: nothing the next week.
    with session_scope(app.services.db) as session:
        prefs = session.get(UserSettings, ("T0001", alice.user_id))
        prefs.digest_day = None
        session.add(prefs)
    alice.receive("Next week", sender="Pat Client <pat@client.com>", at=end + dt.timedelta(days=3))
    alice.receive("Next week again", sender="Pat Client <pat@client.com>", at=end + dt.timedelta(days=4))
    sync(app.services, alice)
    assert job.run_once(now=end + dt.timedelta(days=7, minutes=5)) == 0
    # On again, but the workspace uninstalled the app: nobody to write to, nothing is even counted.
    with session_scope(app.services.db) as session:
        prefs = session.get(UserSettings, ("T0001", alice.user_id))
        prefs.digest_day = 0
        session.add(prefs)
    team_flow.pause_team(app.services.db, team_id="T0001", reason=team_flow.UNINSTALLED)
    assert job.run_once(now=end + dt.timedelta(days=7, minutes=10)) == 0
    with session_scope(app.services.db) as session:
        assert len(session.exec(select(PeopleDigest)).all()) == 1
    team_flow.resume_team(app.services.db, team_id="T0001")
    assert job.run_once(now=end + dt.timedelta(days=7, minutes=15)) == 1
