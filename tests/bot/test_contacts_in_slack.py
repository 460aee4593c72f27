"""Contacts in App Home through the real app: the count, "Add contact", and "Import CSV" from a file sent in a DM."""

from __future__ import annotations

import json

from sqlmodel import col, select

from bot import ids
from flows.contacts import import_contacts_csv
from models.db import session_scope, upgrade
from models.tables import Contact

CSV = (
    "\ufeffEmail,Name\r\n"  # a byte-order mark and a capitalised header, as spreadsheets write them
    "jane@acme.com,Jane Doe\r\n"
    "not-an-email,Bad Row\r\n"
    "\r\n"
    "BOB@Example.ORG,Bob\r\n"
    ",Nobody\r\n"
    "jane@acme.com,Jane D.\r\n"
)


def home(slack, user_id: str = "U0001") -> str:
    slack.fake.wait_for("views.publish", predicate=lambda c: c.args.get("user_id") == user_id)
    return json.dumps(slack.fake.home_tabs[user_id], ensure_ascii=False)


def contacts(slack, team_id: str = "T0001") -> list[tuple[str, str | None]]:
    with session_scope(slack.services.db) as session:
        rows = session.exec(select(Contact).where(col(Contact.team_id) == team_id).order_by(col(Contact.email))).all()
        return [(c.email, c.name) for c in rows]


def test_a_csv_sent_in_a_dm_imports_the_good_rows_and_names_the_bad_lines(slack):
    slack.driver.app_home_opened("U0001")
    assert "*Contacts of your team*: 0" in home(slack)
    slack.driver.block_action(ids.A_HOME_IMPORT_CSV, view=slack.fake.home_tabs["U0001"]["id"])
    instructions = slack.fake.wait_for("chat.postMessage")[-1]
    assert instructions.args["channel"] == "U0001" and "send me the file here" in json.dumps(
        instructions.args["blocks"]
    )

    file = slack.fake.add_file(user_id="U0001", name="contacts.csv", content=CSV.encode(), channel="DU0001")
    assert slack.driver.file_shared(file, user_id="U0001", channel_id="DU0001").status_code == 200
    summary = slack.fake.wait_for("chat.postMessage", count=2)[-1]
    text = json.dumps(summary.args["blocks"], ensure_ascii=False)
    assert summary.args["channel"] == "DU0001"
    assert "*contacts.csv*: 2 contacts added, 1 updated, 0 synced emails linked." in text
    assert "*2 rows refused:*" in text
    assert "line 3: 'not-an-email' is not an email address" in text
    assert "line 6: the email is empty" in text
    assert contacts(slack) == [("bob@example.org", "Bob"), ("jane@acme.com", "Jane D.")]
    # The bytes came through Slack's private URL with the bot's token; the Home count follows.
    downloads = slack.fake.calls_to("files.download")
    assert [c.response["ok"] for c in downloads] == [True] and downloads[0].token == "xoxb-test"
    slack.fake.wait_for("views.publish", count=2)
    assert "*Contacts of your team*: 2" in json.dumps(slack.fake.home_tabs["U0001"])

    # The same rules as `emailsync contacts import`: the same report for the same text.
    report = import_contacts_csv(slack.services.db, team_id="T0002", text=CSV.removeprefix("\ufeff"))
    assert (report.added, report.errors) == (
        2,
        [(3, "'not-an-email' is not an email address"), (6, "the email is empty")],
    )


def test_files_that_are_not_a_persons_csv_in_their_dm_are_not_imported(slack):
    posted = 0
    # Shared in a channel, not in the DM: not an import (the bot does not even look at it).
    in_channel = slack.fake.add_file(user_id="U0001", name="c.csv", content=b"email\na@b.test\n", channel="C0001")
    slack.driver.file_shared(in_channel, user_id="U0001", channel_id="C0001")
    # Someone else's file announced in U0001's DM (a forged or misrouted event): refused after files.info.
    other = slack.fake.add_file(user_id="U0002", name="c.csv", content=b"email\na@b.test\n", channel="DU0002")
    slack.driver.file_shared(other, user_id="U0001", channel_id="DU0001")
    slack.fake.wait_for("files.info")
    # Not a CSV, and not UTF-8: refused with the reason.
    picture = slack.fake.add_file(user_id="U0001", name="me.png", content=b"\x89PNG", channel="DU0001")
    slack.driver.file_shared(picture, user_id="U0001", channel_id="DU0001")
    posted += 1
    latin1 = slack.fake.add_file(
        user_id="U0001", name="latin.csv", content="email,name\nzoe@x.test,Zoë\n".encode("latin-1"), channel="DU0001"
    )
    slack.driver.file_shared(latin1, user_id="U0001", channel_id="DU0001")
    posted += 1
    answers = [c.args["text"] for c in slack.fake.wait_for("chat.postMessage", count=posted)]
    assert answers == [
        "me.png is not a CSV file; send a .csv to import contacts.",
        'latin.csv: The file is not UTF-8 text; save it as "CSV UTF-8" and send it again.',
    ]
    assert contacts(slack) == []
    assert len(slack.fake.calls_to("files.info")) == 3  # never for the file shared in a channel


def test_add_contact_from_home(slack):
    slack.driver.app_home_opened("U0001")
    home(slack)
    slack.driver.block_action(ids.A_HOME_ADD_CONTACT, view=slack.fake.home_tabs["U0001"]["id"])
    modal = slack.fake.wait_for("views.open")[-1].response["view"]
    bad = slack.driver.view_submission(modal["id"], {ids.B_CONTACT_EMAIL: {ids.A_CONTACT_EMAIL: "jane at acme"}})
    assert bad.json() == {"response_action": "errors", "errors": {ids.B_CONTACT_EMAIL: "This is not an email address."}}
    good = slack.driver.view_submission(
        modal["id"],
        {ids.B_CONTACT_EMAIL: {ids.A_CONTACT_EMAIL: "Jane@Acme.com"}, ids.B_CONTACT_NAME: {ids.A_CONTACT_NAME: "Jane"}},
    )
    assert "jane@acme.com* is a contact of your team now" in json.dumps(good.json())
    assert contacts(slack) == [("jane@acme.com", "Jane")]
    slack.fake.wait_for("views.publish", count=2)
    assert "*Contacts of your team*: 1" in json.dumps(slack.fake.home_tabs["U0001"])
    upgrade(slack.services.db)  # idempotent: the app's database is at the head revision
