"""The rules users never see until they break: signatures, retries, 429s, stale triggers, other people's ids."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from bot import ids
from flows import setup as setup_flow
from flows.contacts import import_contacts_csv
from models.db import session_scope
from models.tables import EmailAccount, SetupSession
from tests.support.slack_app import connect_mailbox

ROOT = Path(__file__).resolve().parents[2]


def open_setup(slack, user_id: str = "U0001") -> str:
    assert slack.driver.slash_command("setup", user_id=user_id).status_code == 200
    call = slack.fake.wait_for("views.open", predicate=lambda c: c.response.get("ok"))[-1]
    return call.response["view"]["id"]


def test_bad_signature_and_old_timestamp_get_401(slack):
    assert slack.driver.slash_command("help", bad_signature=True).status_code == 401
    assert slack.driver.slash_command("help", timestamp=int(time.time()) - 3600).status_code == 401
    assert slack.fake.response_url_posts == []


def test_command_in_a_channel_named_payload_still_works(slack):
    response = slack.driver.slash_command("status payload", channel_name="payload-team")
    assert response.status_code == 200
    post = slack.fake.wait_for("response_url")[0]
    assert "no mailbox connected" in json.dumps(post.args)


def test_help_for_unknown_text_and_contact_add(slack):
    slack.driver.slash_command("frobnicate")
    assert "/emailsync setup" in json.dumps(slack.fake.wait_for("response_url")[0].args)
    slack.driver.slash_command("contact add Jane@Example.COM Jane Doe")
    post = slack.fake.wait_for("response_url", count=2)[-1]
    assert "jane@example.com is a contact of your team" in post.args["text"]
    slack.driver.slash_command("contact add not-an-address")
    assert "is not an email address" in slack.fake.wait_for("response_url", count=3)[-1].args["text"]


def test_someone_elses_setup_id_is_refused_and_nothing_changes(slack):
    view_id = open_setup(slack, "U0001")
    with session_scope(slack.services.db) as session:
        before = session.get(SetupSession, 1).draft
    # U0002 sends a view that claims U0001's setup id in private_metadata.
    forged = {**slack.fake.view(view_id), "id": "VFORGED", "hash": "h"}
    forged["private_metadata"] = "1"
    response = slack.driver.block_action(
        ids.A_START,
        view=forged,
        user_id="U0002",
        selected_option="1y",
        strict=False,
        block_id=ids.B_START,
        action_type="radio_buttons",
    )
    assert response.status_code == 200
    response = slack.driver.view_submission(forged, {}, user_id="U0002", strict=False, apply_response=False)
    assert response.json()["response_action"] == "update"
    assert "belongs to someone else" in json.dumps(response.json()["view"])
    with session_scope(slack.services.db) as session:
        row = session.get(SetupSession, 1)
        assert row.draft == before and row.user_id == "U0001"


def test_retried_event_runs_once(slack):
    event = {"type": "app_home_opened", "user": "U0001", "tab": "home", "channel": "D1", "event_ts": "1.0"}
    slack.driver.event(event, event_id="Ev1")
    slack.driver.event(event, event_id="Ev1", retry_num=1, retry_reason="http_timeout")
    slack.fake.wait_for("views.publish")
    time.sleep(0.5)
    assert len(slack.fake.calls_to("views.publish")) == 1
    assert "Set up email sync" in json.dumps(slack.fake.home_tabs["U0001"])


def test_429_is_retried_after_retry_after(slack):
    slack.fake.fail_next("views.open", status=429, retry_after=1)
    open_setup(slack)
    calls = slack.fake.calls_to("views.open")
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 0.9


def test_expired_trigger_falls_back_to_a_dm_with_a_button(slack):
    slack.fake.fail_next("views.open", error="expired_trigger_id")
    slack.driver.slash_command("setup")
    dm = slack.fake.wait_for("chat.postMessage")[0]
    assert "Continue setup" in json.dumps(dm.args)
    message = slack.fake.messages[(dm.response["channel"], dm.response["ts"])]
    slack.driver.block_action(ids.A_CONTINUE_SETUP, container_message=message)
    opened = slack.fake.wait_for("views.open", predicate=lambda c: c.response.get("ok"))[0]
    assert "Step 1 of 4" in json.dumps(opened.response["view"])
    # A fresh link was issued: the page opens.


def test_folder_search_answers_from_the_cache_and_only_for_the_owner(slack, mailbox):
    for i in range(120):
        mailbox.create(f"Client {i:03d}")
    state = connect_mailbox(slack, mailbox)
    state = setup_flow.save_step(
        slack.services.db, state.session_id, team_id="T0001", user_id="U0001", step="folders", sync_mode="labels"
    )
    view = {"type": "modal", "id": "VX", "private_metadata": str(state.session_id), "blocks": []}
    mailbox.server.set_password(mailbox.user, "changed")  # a live IMAP call would fail now: answers come from the cache
    response = slack.driver.block_suggestion(
        ids.A_FOLDERS_SEARCH, "client 01", view=view, strict=False, block_id=ids.B_FOLDERS
    )
    labels = [o["text"]["text"] for o in response.json()["options"]]
    assert labels == [f"Client {i:03d}" for i in range(10, 20)]
    response = slack.driver.block_suggestion(
        ids.A_FOLDERS_SEARCH, "client", view=view, user_id="U0002", strict=False, block_id=ids.B_FOLDERS
    )
    assert response.json()["options"] == []
    mailbox.server.set_password(mailbox.user, mailbox.password)


def test_manifest_matches_the_registered_listeners(slack):
    from slack_bolt import App

    from bot.listeners import register_all

    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    registered: dict[str, set[str]] = {"command": set(), "event": set(), "options": set(), "shortcut": set()}

    class RecordingApp(App):
        def command(self, command, *a, **k):  # type: ignore[override]
            registered["command"].add(command)
            return super().command(command, *a, **k)

        def event(self, event, *a, **k):  # type: ignore[override]
            registered["event"].add(event if isinstance(event, str) else event["type"])
            return super().event(event, *a, **k)

        def options(self, constraints, *a, **k):  # type: ignore[override]
            registered["options"].add(constraints)
            return super().options(constraints, *a, **k)

        def shortcut(self, constraints, *a, **k):  # type: ignore[override]
            registered["shortcut"].add(constraints)
            return super().shortcut(constraints, *a, **k)

    app = RecordingApp(client=slack.deps.client, signing_secret="x", token_verification_enabled=False)
    register_all(app, slack.deps)
    declared_commands = {c["command"] for c in manifest["features"]["slash_commands"]}
    declared_events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert registered["command"] == declared_commands
    assert registered["event"] == declared_events
    assert registered["shortcut"] == {s["callback_id"] for s in manifest["features"].get("shortcuts", [])}
    assert bool(registered["options"]) == bool(manifest["settings"]["interactivity"].get("message_menu_options_url"))
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert {"commands", "chat:write"} <= set(manifest["oauth_config"]["scopes"]["bot"])
    # Every declared one is handled: the real app answers each (Bolt says 404 for an unhandled request).
    for event in declared_events:
        assert slack.driver.event({"type": event, "user": "U0001", "tab": "home"}).status_code == 200
    for command in declared_commands:
        assert slack.driver.slash_command("help", command=command).status_code == 200


def test_status_lists_accounts_without_secrets(slack, mailbox):
    connect_mailbox(slack, mailbox)
    import_contacts_csv(slack.services.db, team_id="T0001", text="email\na@b.test\n")
    slack.driver.slash_command("")  # with an account, no subcommand means status
    post = slack.fake.wait_for("response_url")[0]
    text = json.dumps(post.args)
    assert f"{mailbox.user}@example.net" in text and "setting up" in text and mailbox.password not in text


def test_pause_and_resume_every_mailbox_from_the_command(slack, mailbox):
    db = slack.services.db
    ids_of = {}
    for user_id in ("U0001", "U0002"):  # U0002's mailbox, in the same workspace, must stay as it is
        state = connect_mailbox(slack, mailbox, user_id=user_id)
        setup_flow.save_step(db, state.session_id, team_id="T0001", user_id=user_id, step="start", start="now")
        ids_of[user_id] = setup_flow.finish(db, state.session_id, team_id="T0001", user_id=user_id)
    address = f"{mailbox.user}@example.net"
    slack.driver.slash_command("pause")
    assert slack.fake.wait_for("response_url")[0].args["text"] == f"• {address} is paused."
    slack.driver.slash_command("sync")
    assert slack.fake.wait_for("response_url", count=2)[1].args["text"].startswith(f"• {address}: ")
    slack.driver.slash_command("resume")
    assert slack.fake.wait_for("response_url", count=3)[2].args["text"] == f"• {address} syncs again."
    slack.driver.slash_command("pause", user_id="U0003")
    assert "no mailbox connected" in slack.fake.wait_for("response_url", count=4)[3].args["text"]
    with session_scope(db) as session:
        assert session.get(EmailAccount, ids_of["U0002"]).state == "active"
