"""Find's and the contacts' view builders, without Slack, checked against Block Kit's limits (worst cases)."""

from __future__ import annotations

import datetime as dt
import json

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot import ids
from bot.views import contacts as contact_views
from bot.views import find as views
from bot.views.home import general_view, home_view
from flows.contacts import ImportReport
from flows.find import FindResult, Mailbox, Person, ThreadMessage, ThreadSummary, ThreadView
from flows.people import Digest, Suggestion
from models.find import Match
from models.tables import UserSettings
from tests.support.block_kit import limit_errors
from tests.support.fake_slack import block_kit_errors, view_errors

AT = dt.datetime(2026, 3, 14, 9, 30, tzinfo=dt.UTC)
LONG = "<b>&" + "x" * 5000


def valid_view(view: dict) -> dict:
    View(**view).validate_json()
    assert limit_errors(view) == [] and view_errors(view) == []
    for block in view["blocks"]:
        Block.parse(block).validate_json()
    return view


def valid_message(message: dict) -> dict:
    assert limit_errors(message) == [] and block_kit_errors(message["blocks"]) == []
    assert len(message["text"]) < 40_000
    return message


def summary(i: int, *, long: bool = False) -> ThreadSummary:
    people = [Person(f"p{n}@acme.com", LONG if long else f"P {n}") for n in range(40)]
    return ThreadSummary(
        open_id=i,
        subject=LONG if long else f"Subject {i}",
        last_at=AT,
        emails=3,
        direction="sent" if i % 2 else "received",
        snippet=LONG if long else "Hello there",
        people=people,
        mailboxes=[Mailbox("me@x.test", "U1", True), Mailbox("bob@x.test", "U2", False)],
    )


def result(
    page: int = 5, *, threads: int = 23, offset: int = 0, long: bool = False, query: str = "jane@acme.com"
) -> FindResult:
    return FindResult(
        query=query,
        match=Match("address", query),
        emails=57,
        threads=threads,
        first_at=AT,
        offset=offset,
        page=[summary(i, long=long) for i in range(page)],
    )


def test_counts_read_like_a_crm():
    assert views.counts_line(result(), today=dt.date(2026, 11, 1)) == "57 emails in 23 threads since March"
    assert views.counts_line(result(), today=dt.date(2027, 1, 1)) == "57 emails in 23 threads since March 2026"
    one = FindResult("a@b.c", Match("address", "a@b.c"), 1, 1, AT, 0, [summary(0)])
    assert views.counts_line(one, today=dt.date(2026, 5, 1)) == "1 email in 1 thread since March"


def test_results_are_valid_as_message_and_modal_even_at_their_longest():
    r = result(long=True, offset=5, query="x" * 200)
    message = valid_message(views.results_message(r, replace=True))
    assert message["replace_original"] is True and message["response_type"] == "ephemeral"
    modal = valid_view(views.results_modal(r, others=[f"{'y' * 300}@x.test"] * 9))
    text = json.dumps(modal)
    assert "&lt;b&gt;&amp;" in text and "<b>" not in text  # names and subjects are escaped
    pages = [e for b in modal["blocks"] if b.get("block_id") == "find_pages" for e in b["elements"]]
    assert [views.parse_page_value(p["value"]) for p in pages] == [("x" * 200, 0), ("x" * 200, 10)]
    assert "<!date^" in text and "+37" in text


def test_an_empty_result_and_errors_are_valid():
    empty = FindResult("nobody@x.test", Match("address", "nobody@x.test"), 0, 0, None, 0, [])
    assert "No emails you can see" in json.dumps(valid_message(views.results_message(empty)))
    valid_message(views.find_error_message("Type at least two letters of a name."))
    valid_view(views.loading_modal())
    valid_view(views.notice_modal("x" * 4000))


def thread(n: int, *, own: str | None = "private", unfolded: bool = False) -> ThreadView:
    messages = [
        ThreadMessage(
            id=i,
            sender=Person("jane@acme.com", LONG),
            recipients=[Person(f"r{k}@x.test", None) for k in range(20)],
            at=AT,
            direction="received",
            mailbox=Mailbox("me@x.test", "U1", own is not None),
            visibility=own or "shared",
            text=("line\n" * 3000) + "[… 12 quoted lines folded]",
            quoted_lines=12,
        )
        for i in range(n)
    ]
    return ThreadView(
        anchor_id=1,
        subject=LONG,
        messages=messages,
        total=n + 30,
        own_visibility=own,
        own_id=1 if own else None,
        unfolded=unfolded,
    )


def test_the_thread_modal_is_valid_for_the_longest_thread_and_offers_the_owners_choices():
    view = valid_view(views.thread_modal(thread(15), notice="Only you see this thread now (3 emails)."))
    assert len(view["blocks"]) <= 100
    controls = next(b for b in view["blocks"] if b.get("block_id") == "thread_controls")["elements"]
    assert [(c["action_id"], c["text"]["text"]) for c in controls] == [
        (ids.A_REPLY, "Reply"),
        (ids.A_THREAD_QUOTES, "Show quoted text"),
        (f"{ids.A_THREAD_VISIBILITY}_shared", "Share with the team"),
    ]
    assert controls[0]["value"] == "14"  # the latest email shown
    assert controls[2]["value"] == "shared:1"
    bodies = [b for b in view["blocks"] if b["type"] == "section" and b["text"]["type"] == "plain_text"]
    assert bodies and all(len(b["text"]["text"]) <= 3000 for b in bodies)  # bodies are plain text, never mrkdwn
    mixed = valid_view(views.thread_modal(thread(1, own="mixed", unfolded=True)))
    texts = [e["text"]["text"] for b in mixed["blocks"] for e in b.get("elements", []) if e.get("type") == "button"]
    assert texts == ["Reply", "Hide quoted text", "Share with the team", "Make private"]
    teammate = valid_view(views.thread_modal(thread(2, own=None)))
    assert ids.A_THREAD_VISIBILITY not in json.dumps(teammate)
    assert views.thread_modal(thread(1))["private_metadata"] == '{"m":1,"u":false}'


def digest(states: list[str]) -> Digest:
    return Digest(
        id=7,
        team_id="T",
        user_id="U",
        window_start=AT - dt.timedelta(days=7),
        window_end=AT,
        suggestions=[
            Suggestion(f"{'n' * 300}{i}@x.test", LONG, 9, 4, 5, state=s, linked=3 if s == "added" else None)
            for i, s in enumerate(states)
        ],
        channel="D1",
        ts="1.2",
    )


def test_the_digest_message_shows_each_address_and_what_was_done():
    message = valid_message(contact_views.digest_message(digest(["new", "added", "ignored"] + ["new"] * 7)))
    text = json.dumps(message, ensure_ascii=False)
    assert "✅ Added as a contact · 3 synced emails linked" in text and "Ignored" in text
    buttons = [e for b in message["blocks"] for e in b.get("elements", []) if e.get("type") == "button"]
    assert len(buttons) == 16
    assert contact_views.parse_digest_value(buttons[0]["value"]) == (7, f"{'n' * 300}0@x.test")
    modal = valid_view(contact_views.digest_add_modal(7, digest(["new"]).suggestions[0]))
    name = next(b for b in modal["blocks"] if b.get("block_id") == ids.B_CONTACT_NAME)["element"]
    assert len(name["initial_value"]) == 200 and len(modal["private_metadata"]) <= 3000


def test_contact_modals_import_answers_and_home_are_valid():
    valid_view(contact_views.add_contact_modal())
    valid_view(contact_views.contact_added_modal("a@b.test", 12))
    valid_message(contact_views.import_instructions())
    report = ImportReport(added=3, updated=1, linked_messages=40, errors=[(n, LONG[:300]) for n in range(2, 500)])
    answer = valid_message(contact_views.import_summary("contacts.csv", report))
    assert "498 rows refused" in json.dumps(answer) and "• … and 486 more" in json.dumps(answer, ensure_ascii=False)
    prefs = UserSettings(team_id="T", user_id="U", digest_day=None, timezone="Europe/Berlin")
    home = valid_view(home_view([], prefs, [], contacts=1234))
    text = json.dumps(home)
    assert "*Contacts of your team*: 1,234" in text and "(a weekly direct message): *off*" in text
    assert ids.A_HOME_ADD_CONTACT in text and ids.A_HOME_IMPORT_CSV in text
    prefs.digest_day, prefs.digest_hour = 4, 17
    assert "Fridays at 17:00 (Europe/Berlin)" in json.dumps(valid_view(home_view([], prefs, [])))
    settings = valid_view(general_view(prefs, []))
    day = next(b for b in settings["blocks"] if b.get("block_id") == ids.B_DIGEST_DAY)["element"]
    hour = next(b for b in settings["blocks"] if b.get("block_id") == ids.B_DIGEST_HOUR)["element"]
    assert (day["initial_option"]["value"], hour["initial_option"]["value"]) == ("4", "17")
