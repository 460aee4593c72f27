"""The send builders stay within Slack's limits however long the input (pure functions, no Slack)."""

from __future__ import annotations

import datetime as dt
import json

from bot import ids
from bot.views import send as views
from bot.views.home import home_view
from flows import richtext
from models.tables import EmailAccount, SentEmail, UserSettings
from tests.bot.test_views_find import valid_message, valid_view

LONG = "x" * 5000


def accounts(n: int) -> list[EmailAccount]:
    return [
        EmailAccount(
            id=i,
            team_id="T",
            user_id="U",
            email=f"{'a' * 300}{i}@x.test",
            imap_host="h",
            username="u",
            secret_encrypted="",
        )
        for i in range(n)
    ]


def sent(i: int) -> SentEmail:
    return SentEmail(
        id=i,
        team_id="T",
        user_id="U",
        account_id=1,
        compose_key=str(i),
        message_id=f"<{i}@x>",
        thread_key="t",
        subject=LONG,
        recipients=json.dumps([{"email": f"{'r' * 200}{k}@x.test", "role": "to"} for k in range(50)]),
        track_opens=True,
        opens=3,
        clicks=1,
        last_open_at=dt.datetime(2026, 11, 30, 14, 5),
        status="partial",
        links=json.dumps(["https://example.com/" + "p" * 3000]),
    )


def test_compose_modal_results_dm_and_home_are_valid_at_their_limits() -> None:
    body = richtext.quoted(LONG, "On Mon, Jane wrote:")
    view = valid_view(
        views.compose_view(accounts(150), to=[f"{'t' * 400}@x.test"] * 120, subject=LONG, body=body, reply_to=7)
    )
    assert json.loads(view["private_metadata"]) == {"reply_to": 7}
    off = valid_view(views.compose_view(accounts(1), opens=False, links=False, notify=False))
    tracking = next(b for b in off["blocks"] if b.get("block_id") == ids.B_SEND_TRACKING)
    assert "initial_options" not in tracking["element"]
    assert all(
        b.get("block_id") != ids.B_SEND_TRACKING
        for b in views.compose_view(accounts(1), tracking_allowed=False)["blocks"]
    )
    valid_view(views.no_account_view())
    valid_view(views.sending_view())
    failed = [(f"{'f' * 300}{i}@x.test", LONG) for i in range(60)]
    valid_view(
        views.result_view(
            subject=LONG, delivered=["a@x.test"] * 100, failed=failed, error=LONG, fix=LONG, sent_copy_problem=LONG
        )
    )
    dm = views.tracking_dm(sent(1), who="Grace Hopper", clicked=["https://example.com/" + "p" * 3000] * 9)
    valid_message(dm)
    assert "opened 3\u00d7 \u00b7 last <!date^" in dm["text"]
    assert len(views.address_option("a" * 400 + "@x.test", "N" * 400)["value"]) <= 150
    home = home_view(
        [],
        UserSettings(team_id="T", user_id="U"),
        [],
        contacts=3,
        sent=views.home_sent_blocks([sent(i) for i in range(5)]),
    )
    valid_view(home)
