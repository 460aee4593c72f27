"""View builders, unit-tested without Slack and checked against Block Kit's limits with slack_sdk.models."""

from __future__ import annotations

import json

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot import ids
from bot.views import messages
from bot.views import setup as views
from flows.lifecycle import AccountSummary
from flows.setup import SetupDraft, SetupState
from sync.preview import WindowPreview
from tests.support.block_kit import limit_errors


def state(step: str = "tracking", n_folders: int = 5, name_len: int = 10, **draft: object) -> SetupState:
    folders = [("INBOX", "inbox"), ("Sent", "sent"), ("Trash", "trash")]
    folders += [(f"F{i}-" + "x" * name_len, None) for i in range(n_folders)]
    d = SetupDraft(email="me@example.com", **draft)  # type: ignore[arg-type]
    return SetupState(
        session_id=7, team_id="T", user_id="U", step=step, draft=d, account_id=1, view_id="V1", folders=folders
    )


def valid(view: dict) -> dict:
    View(**view).validate_json()
    assert limit_errors(view) == []
    for block in view["blocks"]:
        Block.parse(block).validate_json()
    assert len(json.dumps(view)) < 250_000
    return view


def block_ids(view: dict) -> list[str]:
    return [b.get("block_id", "") for b in view["blocks"]]


def test_every_step_is_valid_and_counts_its_step():
    for step, n in (("tracking", 2), ("folders", 3), ("start", 4)):
        view = valid(views.view_for(state(step)))
        assert f"Step {n} of 4" in json.dumps(view) and view["private_metadata"] == "7"
    connect = valid(views.connect_view(state("connect"), "https://example.test/connect/abc"))
    assert "submit" not in connect
    assert connect["blocks"][2]["elements"][0]["url"] == "https://example.test/connect/abc"


def test_label_picker_only_in_labels_mode_with_inbox_and_sent_preselected():
    assert ids.B_FOLDERS not in block_ids(views.folders_view(state("folders", sync_mode="all")))
    view = valid(views.folders_view(state("folders", sync_mode="labels", folders=["INBOX", "Sent"])))
    picker = next(b for b in view["blocks"] if b.get("block_id") == ids.B_FOLDERS)["element"]
    assert picker["type"] == "multi_static_select"
    assert [o["text"]["text"] for o in picker["initial_options"]] == ["INBOX", "Sent"]


def test_more_than_100_folders_and_long_names_use_a_searchable_picker():
    s = state("folders", n_folders=400, name_len=300, sync_mode="labels", folders=["INBOX"])
    view = valid(views.folders_view(s))
    picker = next(b for b in view["blocks"] if b.get("block_id") == ids.B_FOLDERS)["element"]
    assert picker["type"] == "multi_external_select" and picker["action_id"] == ids.A_FOLDERS_SEARCH
    options = views.folder_options(s, "f1")
    assert 0 < len(options) <= 100 and all(len(o["text"]["text"]) <= 75 for o in options)
    assert views.names_from_values(s, [options[0]["value"]])[0].startswith("F1")


def test_scope_question_only_for_a_past_start_and_preview_text():
    assert ids.B_SCOPE not in block_ids(views.start_view(state("start", start="now")))
    view = valid(views.start_view(state("start", start="3m", contact_scope="contacts"), WindowPreview(1234, 56, False)))
    text = json.dumps(view)
    assert ids.B_SCOPE in block_ids(view) and "1,234 messages" in text and "56 of them involve a CRM contact" in text
    assert "Counting" in json.dumps(views.start_view(state("start", start="1m"), None, counting=True))


@pytest.mark.parametrize("radio_block", [ids.B_SYNC_MODE, ids.B_START])
def test_choices_that_change_the_view_dispatch_actions(radio_block):
    view = views.start_view(state("start")) if radio_block == ids.B_START else views.folders_view(state("folders"))
    assert next(b for b in view["blocks"] if b.get("block_id") == radio_block)["dispatch_action"] is True


def test_home_status_and_help_are_valid_for_many_accounts():
    accounts = [
        AccountSummary(
            id=i,
            email=f"a{i}@<b>.test",
            state="error",
            paused_reason=None,
            sync_mode="all",
            start_option="now",
            start_date=None,
            contact_scope="all",
            visibility="private",
            messages=5 if i == 1 else 0,
            last_synced_at=None,
            last_error="x" * 500,
            run_processed=None,
            run_total=None,
            folders=[],
        )
        for i in range(60)
    ]
    status = messages.status_message(accounts)
    assert "5 emails" in status["text"] and "retrying after an error" in status["text"]
    assert "&lt;b&gt;" in status["text"]
    assert "setup" in messages.help_message()["text"]
    assert "no mailbox" in messages.status_message([])["text"]


def test_the_limit_checker_catches_what_slack_rejects():
    too_many = views.folder_picker(state("folders", n_folders=150, sync_mode="labels"))
    too_many["element"]["type"] = "multi_static_select"
    too_many["element"]["options"] = [
        {"text": {"type": "plain_text", "text": str(i)}, "value": str(i)} for i in range(101)
    ]
    assert limit_errors({"type": "modal", "blocks": [too_many]}) == ["multi_static_select with 101 options > 100"]
