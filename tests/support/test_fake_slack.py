"""Tests of the Slack test infrastructure itself: FakeSlack (Web API) and SlackDriver (requests to an app)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from slack_bolt import Ack, App, BoltRequest, Respond
from slack_bolt.oauth.oauth_flow import OAuthFlow
from slack_bolt.oauth.oauth_settings import OAuthSettings
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.oauth.installation_store import FileInstallationStore
from slack_sdk.oauth.state_store import FileOAuthStateStore
from slack_sdk.webhook import WebhookClient

from tests.support.fake_slack import FakeSlack, block_kit_errors, view_errors
from tests.support.slack_driver import BoltServer, SlackDriver, serve_bolt

SECRET = "s"


def _text(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def _option(value: str) -> dict[str, Any]:
    return {"text": _text(value), "value": value}


def _modal(title: str = "Email sync", **extra: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": "setup",
        "title": _text(title),
        "blocks": [{"type": "section", "block_id": "intro", "text": {"type": "mrkdwn", "text": "Hello"}}],
    }
    view.update(extra)
    return view


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    return WebClient(base_url=fake.api_url, token="xoxb-test")


def _error(exc: pytest.ExceptionInfo[SlackApiError]) -> str:
    return str(exc.value.response["error"])


# ----------------------------------------------------------------------------------------------
# FakeSlack through slack_sdk's WebClient
# ----------------------------------------------------------------------------------------------


def test_auth_and_unknown_method(fake: FakeSlack, client: WebClient) -> None:
    me = client.auth_test()
    assert (me["team_id"], me["user_id"], me["bot_id"]) == ("T0001", "UBOT", "BBOT")
    with pytest.raises(SlackApiError) as exc:
        WebClient(base_url=fake.api_url).auth_test()
    assert _error(exc) == "not_authed"
    with pytest.raises(SlackApiError) as exc:
        client.api_call("chat.postMessagee", json={"channel": "C1", "text": "x"})
    assert _error(exc) == "unknown_method"
    assert [c.method for c in fake.calls] == ["auth.test", "auth.test", "chat.postMessagee"]
    assert fake.calls[0].token == "xoxb-test" and fake.calls[1].token is None


# Called by slack_sdk on the app's behalf, not written as client.<method>(...) in the app's code.
# (Socket Mode's apps.connections.open belongs here too once the fake answers it.)
# Bolt's OAuth install and slack_sdk's TokenRotator; slack_sdk's Socket Mode client.
CALLED_FOR_THE_APP = {"oauth.v2.access", "apps.connections.open"}


def test_the_fake_answers_exactly_the_methods_the_app_calls() -> None:
    """Each Web API method the app calls (client.chat_postMessage -> chat.postMessage) and no other."""
    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"\.(auth|chat|files|users|views|apps|conversations)_([A-Za-z_]+)\(")
    called = {
        f"{family}.{method.replace('_', '.')}"
        for package in ("bot", "flows", "sync", "models")
        for path in (root / package).rglob("*.py")
        for family, method in pattern.findall(path.read_text())
    }
    assert called >= {"chat.postMessage", "views.open", "auth.test"}, called  # the scan itself works
    assert FakeSlack().methods == called | CALLED_FOR_THE_APP


def test_post_and_update_messages(fake: FakeSlack, client: WebClient) -> None:
    posted = client.chat_postMessage(channel="U0007", text="Syncing…")
    assert posted["channel"] == "DU0007"
    key = (posted["channel"], posted["ts"])
    assert fake.messages[key]["text"] == "Syncing…"

    blocks = [{"type": "section", "block_id": "p", "text": {"type": "mrkdwn", "text": "*42* messages"}}]
    client.chat_update(channel=posted["channel"], ts=posted["ts"], text="Done", blocks=blocks)
    assert fake.messages[key]["text"] == "Done"
    assert fake.messages[key]["blocks"][0]["text"]["text"] == "*42* messages"

    with pytest.raises(SlackApiError) as exc:
        client.chat_update(channel=posted["channel"], ts="1.000000", text="x")
    assert _error(exc) == "message_not_found"
    with pytest.raises(SlackApiError) as exc:
        client.chat_update(channel="U0007", ts=posted["ts"], text="x")  # chat.update needs the DM id
    assert _error(exc) == "channel_not_found"
    with pytest.raises(SlackApiError) as exc:
        client.api_call("chat.postMessage", json={"channel": "C0001"})
    assert _error(exc) == "no_text"

    client.chat_postEphemeral(channel="C0001", user="U0007", text="only you")
    assert fake.ephemerals[-1]["text"] == "only you"
    assert fake.wait_for("chat.update", count=2)[1].error == "message_not_found"


def test_form_encoded_calls_and_token_argument(fake: FakeSlack) -> None:
    blocks = '[{"type": "divider"}]'
    reply = httpx.post(
        fake.api_url + "chat.postMessage",
        data={"token": "xoxb-form", "channel": "C0001", "blocks": blocks, "text": "t"},
    ).json()
    assert reply["ok"], reply
    assert fake.calls[-1].token == "xoxb-form"
    assert fake.messages[("C0001", reply["ts"])]["blocks"][0]["type"] == "divider"
    # Slack ignores a token inside a JSON body
    reply = httpx.post(fake.api_url + "auth.test", json={"token": "xoxb-json"}).json()
    assert reply == {"ok": False, "error": "not_authed"}


def test_views_open_needs_a_fresh_unused_trigger(fake: FakeSlack, client: WebClient) -> None:
    trigger = fake.issue_trigger_id("U0001")
    opened = client.views_open(trigger_id=trigger, view=_modal(private_metadata="42"))["view"]
    assert opened["id"] in fake.views and opened["hash"] and opened["state"] == {"values": {}}
    assert opened["private_metadata"] == "42" and opened["root_view_id"] == opened["id"]
    assert opened["title"] == {"type": "plain_text", "text": "Email sync", "emoji": True}
    assert fake.view_owner(opened["id"]) == "U0001"
    assert fake.current_view("U0001")["id"] == opened["id"]  # type: ignore[index]

    with pytest.raises(SlackApiError) as exc:
        client.views_open(trigger_id=trigger, view=_modal())
    assert _error(exc) == "exchanged_trigger_id"
    with pytest.raises(SlackApiError) as exc:
        client.views_open(trigger_id="1.2.3", view=_modal())
    assert _error(exc) == "invalid_trigger_id"

    fake.trigger_ttl = 0.05
    late = fake.issue_trigger_id("U0001")
    time.sleep(0.1)
    with pytest.raises(SlackApiError) as exc:
        client.views_open(trigger_id=late, view=_modal())
    assert _error(exc) == "expired_trigger_id"


def test_views_update_checks_hash_and_id(fake: FakeSlack, client: WebClient) -> None:
    opened = client.views_open(trigger_id=fake.issue_trigger_id("U0001"), view=_modal())["view"]
    first = client.views_update(view_id=opened["id"], hash=opened["hash"], view=_modal("Step 2"))["view"]
    assert first["id"] == opened["id"] and first["hash"] != opened["hash"]
    assert fake.views[opened["id"]]["title"]["text"] == "Step 2"

    with pytest.raises(SlackApiError) as exc:
        client.views_update(view_id=opened["id"], hash=opened["hash"], view=_modal("Stale"))
    assert _error(exc) == "hash_conflict"
    with pytest.raises(SlackApiError) as exc:
        client.views_update(view_id="V999", view=_modal())
    assert _error(exc) == "not_found"

    client.views_update(view_id=opened["id"], view=_modal("Step 3", external_id="setup-U0001"))  # no hash: ok
    assert client.views_update(external_id="setup-U0001", view=_modal("Step 4"))["view"]["id"] == opened["id"]

    fake.close_view(opened["id"])
    with pytest.raises(SlackApiError) as exc:
        client.views_update(view_id=opened["id"], view=_modal())
    assert _error(exc) == "not_found"


def test_views_update_keeps_what_the_user_typed(fake: FakeSlack, client: WebClient) -> None:
    element = {"type": "plain_text_input", "action_id": "value"}
    field = {"type": "input", "block_id": "email", "label": _text("Email"), "element": element}
    view = _modal(submit=_text("Next"), blocks=[field])
    opened = client.views_open(trigger_id=fake.issue_trigger_id("U0001"), view=view)["view"]
    typed = {"email": {"value": {"type": "plain_text_input", "value": "me@example.com"}}}
    fake.set_view_state(opened["id"], typed)
    client.views_update(view_id=opened["id"], view={**view, "title": _text("Again")})
    assert fake.views[opened["id"]]["state"]["values"] == typed
    client.views_update(view_id=opened["id"], view={**view, "blocks": [{**field, "block_id": "email2"}]})
    assert fake.views[opened["id"]]["state"]["values"] == {}


def test_views_push_stack_and_publish_home(fake: FakeSlack, client: WebClient) -> None:
    root = client.views_open(trigger_id=fake.issue_trigger_id("U0001"), view=_modal())["view"]
    second = client.views_push(trigger_id=fake.issue_trigger_id("U0001", view_id=root["id"]), view=_modal("Two"))
    assert second["view"]["root_view_id"] == root["id"]
    assert second["view"]["previous_view_id"] == root["id"]
    client.views_push(trigger_id=fake.issue_trigger_id("U0001"), view=_modal("Three"))
    with pytest.raises(SlackApiError) as exc:
        client.views_push(trigger_id=fake.issue_trigger_id("U0001"), view=_modal("Four"))
    assert _error(exc) == "push_limit_reached"
    stack = fake.view_stack(root["id"])
    assert len(stack) == 3
    fake.close_view(stack[-1])  # the user goes back one step
    assert fake.view_stack(root["id"]) == stack[:2] and not fake.is_open(stack[-1])
    pushed = fake.push_view(stack[1], _modal("Three again"))  # response_action: push
    assert fake.view_stack(root["id"]) == [*stack[:2], pushed["id"]]
    fake.close_view(pushed["id"], clear=True)  # response_action: clear
    assert fake.view_stack(root["id"]) == [] and fake.current_view("U0001") is None

    home = {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Home"}}]}
    published = client.views_publish(user_id="U0001", view=home)["view"]
    assert fake.home_tabs["U0001"]["id"] == published["id"]
    again = client.views_publish(user_id="U0001", view=home, hash=published["hash"])["view"]
    assert again["id"] == published["id"]
    with pytest.raises(SlackApiError) as exc:
        client.views_publish(user_id="U0001", view=home, hash=published["hash"])
    assert _error(exc) == "hash_conflict"
    with pytest.raises(SlackApiError) as exc:
        client.views_publish(user_id="U0001", view=_modal())
    assert _error(exc) == "invalid_arguments"


@pytest.mark.parametrize(
    ("view", "needle"),
    [
        (
            _modal(
                blocks=[
                    {
                        "type": "actions",
                        "elements": [
                            {
                                "type": "static_select",
                                "action_id": "folders",
                                "options": [_option(str(i)) for i in range(101)],
                            }
                        ],
                    }
                ]
            ),
            "options attribute cannot exceed 100 elements",
        ),
        (_modal("A title that is far too long"), "title must be between 1 and 24 characters"),
        ({"type": "modal", "blocks": [{"type": "divider"}]}, "missing required field: title"),
        ({"type": "dialog", "title": _text("x"), "blocks": [{"type": "divider"}]}, "must be one of"),
        (_modal(private_metadata="x" * 3001), "must be less than 3001 characters"),
        (_modal(blocks=[{"type": "divider"}] * 101), "views must contain between 1 and 100 blocks"),
        (_modal(blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]), "3000"),
        (_modal(blocks=[{"type": "bogus"}]), "unsupported type"),
        (_modal(blocks=[{"type": "section", "text": "plain string"}]), "must provide an object"),
        (_modal(blocks=[{"type": "divider", "colour": "red"}]), "invalid additional property: colour"),
        (_modal(blocks=[{"type": "divider", "block_id": "a"}, {"type": "divider", "block_id": "a"}]), "duplicate"),
        (
            _modal(blocks=[{"type": "input", "label": _text("Email"), "element": {"type": "plain_text_input"}}]),
            "must provide submit",
        ),
        (_modal(title="x", unknown=True), "invalid additional property: unknown"),
        (
            _modal(
                blocks=[{"type": "actions", "elements": [{"type": "button", "text": _text("Go"), "colour": "red"}]}]
            ),
            "invalid additional property: colour [json-pointer:/view/blocks/0/elements/0]",
        ),
        (_modal(blocks=[{"type": "header", "text": _text("")}]), "must be more than 0 characters"),
        (_modal(blocks=[{"type": "actions", "elements": []}]), "must provide at least 1 item"),
    ],
)
def test_invalid_views_are_refused(fake: FakeSlack, client: WebClient, view: dict[str, Any], needle: str) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.views_open(trigger_id=fake.issue_trigger_id("U0001"), view=view)
    assert _error(exc) == "invalid_arguments"
    messages = exc.value.response["response_metadata"]["messages"]
    assert any(needle in m for m in messages), messages
    assert view_errors(view), "the pure validator agrees"


def test_a_rich_valid_view_passes(fake: FakeSlack, client: WebClient) -> None:
    view = _modal(
        submit=_text("Save"),
        close=_text("Cancel"),
        notify_on_close=True,
        blocks=[
            {"type": "header", "text": _text("Connect")},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "Open the page"},
                "accessory": {"type": "button", "action_id": "connect", "text": _text("Open"), "url": "https://x.test"},
            },
            {
                "type": "input",
                "block_id": "folders",
                "label": _text("Folders"),
                "optional": True,
                "element": {
                    "type": "multi_static_select",
                    "action_id": "pick",
                    "options": [_option("INBOX"), _option("Sent")],
                    "initial_options": [_option("INBOX")],
                },
            },
            {"type": "input", "label": _text("Start"), "element": {"type": "datepicker", "initial_date": "2024-01-31"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "fine print"}]},
        ],
    )
    opened = client.views_open(trigger_id=fake.issue_trigger_id("U0001"), view=view)["view"]
    date_block = opened["blocks"][3]
    assert date_block["block_id"] and date_block["element"]["action_id"], "Slack fills missing ids"


def test_message_blocks_are_validated(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C0001", text="x", blocks=[{"type": "divider"}] * 51)
    assert _error(exc) == "invalid_blocks"
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C0001", text="x", blocks=[{"type": "header", "text": _text("x" * 151)}])
    assert _error(exc) == "invalid_blocks"
    assert block_kit_errors([{"type": "header", "text": _text("ok")}]) == []


def test_fail_next_rate_limit_is_retried_by_slack_sdk(fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", status=429, retry_after=1)
    retrying = WebClient(
        base_url=fake.api_url, token="xoxb-test", retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)]
    )
    assert retrying.chat_postMessage(channel="C0001", text="hi")["ok"]
    first, second = fake.calls_to("chat.postMessage")
    assert (first.status, first.response["error"], first.headers["Retry-After"]) == (429, "ratelimited", "1")
    assert second.ok and second.at - first.at >= 1.0
    assert len(fake.messages) == 1, "the refused call had no effect"


def test_fail_next_errors_and_server_errors(fake: FakeSlack, client: WebClient) -> None:
    fake.fail_next("views.open", error="expired_trigger_id")
    with pytest.raises(SlackApiError) as exc:
        client.views_open(trigger_id=fake.issue_trigger_id("U0001"), view=_modal())
    assert _error(exc) == "expired_trigger_id"

    fake.fail_next("chat.update", status=500, times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as exc:
            client.chat_update(channel="C0001", ts="1.1", text="x")
        assert exc.value.response.status_code == 500
    with pytest.raises(SlackApiError) as exc:
        client.chat_update(channel="C0001", ts="1.1", text="x")
    assert _error(exc) == "message_not_found", "failures are used up"


def test_users_info_defaults_and_overrides(fake: FakeSlack, client: WebClient) -> None:
    user = client.users_info(user="U0042")["user"]
    assert user["profile"]["email"] == "u0042@example.com"
    assert (user["team_id"], user["tz"], user["deleted"]) == ("T0001", "Europe/Berlin", False)
    fake.users["U0042"] = {"deleted": True, "profile": {"email": "gone@example.com"}}
    user = client.users_info(user="U0042")["user"]
    assert user["deleted"] is True and user["profile"]["email"] == "gone@example.com"
    assert user["profile"]["real_name"] == "User U0042", "overrides merge over the defaults"
    fake.users["U0043"] = None
    with pytest.raises(SlackApiError) as exc:
        client.users_info(user="U0043")
    assert _error(exc) == "user_not_found"


def test_oauth_install_and_a_revoked_token(fake: FakeSlack) -> None:
    anonymous = WebClient(base_url=fake.api_url)
    with pytest.raises(SlackApiError) as exc:
        anonymous.oauth_v2_access(client_id="cid", client_secret="wrong", code="c1")
    assert _error(exc) == "bad_client_secret"
    install = anonymous.oauth_v2_access(client_id="cid", client_secret="fake-secret", code="c1")
    assert install["team"]["id"] == "T0002" and install["token_type"] == "bot"
    assert install["access_token"].startswith("xoxb-fake-") and install["is_enterprise_install"] is False
    with pytest.raises(SlackApiError) as exc:
        anonymous.oauth_v2_access(client_id="cid", client_secret="fake-secret", code="c1")
    assert _error(exc) == "invalid_code", "codes are single use"

    bot = WebClient(base_url=fake.api_url, token=install["access_token"])
    me = bot.auth_test()
    assert (me["team_id"], me["user_id"]) == ("T0002", install["bot_user_id"]) and me["bot_id"]
    fake.revoked_tokens.add(install["access_token"])  # the workspace uninstalled the app
    with pytest.raises(SlackApiError) as exc:
        bot.auth_test()
    assert _error(exc) == "token_revoked"


def test_oauth_response_fits_bolts_oauth_flow(fake: FakeSlack, tmp_path: Path) -> None:
    settings = OAuthSettings(
        client_id="cid",
        client_secret="fake-secret",
        scopes=["commands", "chat:write"],
        installation_store=FileInstallationStore(base_dir=str(tmp_path / "installations")),
        state_store=FileOAuthStateStore(expiration_seconds=600, base_dir=str(tmp_path / "states")),
    )
    flow = OAuthFlow(client=WebClient(base_url=fake.api_url), settings=settings)
    installation = flow.run_installation("code-1")
    assert installation is not None
    assert (installation.team_id, installation.bot_user_id) == ("T0002", "UBOT2")
    assert installation.bot_id and installation.bot_token == fake.oauth_response["access_token"]
    assert [c.method for c in fake.calls] == ["oauth.v2.access", "auth.test"]


def test_response_urls(fake: FakeSlack, client: WebClient) -> None:
    url = fake.response_url()
    assert WebhookClient(url).send(text="hello").status_code == 200
    assert fake.response_url_posts == [{"text": "hello"}]
    assert fake.wait_for("response_url")[0].args == {"text": "hello"}

    posted = client.chat_postMessage(channel="C0001", text="Sync?")
    bound = fake.response_url(channel="C0001", message_ts=posted["ts"])
    WebhookClient(bound).send(text="Syncing", replace_original=True)
    assert fake.messages[("C0001", posted["ts"])]["text"] == "Syncing"
    bad = WebhookClient(bound).send(text="x", blocks=[{"type": "bogus"}])
    assert bad.status_code == 400
    WebhookClient(bound).send(delete_original=True)
    assert ("C0001", posted["ts"]) not in fake.messages


def test_wait_for_reports_what_it_saw(fake: FakeSlack, client: WebClient) -> None:
    client.auth_test()
    threading.Timer(0.1, lambda: client.chat_postMessage(channel="C0001", text="late")).start()
    assert fake.wait_for("chat.postMessage", timeout=5)[0].args["text"] == "late"
    with pytest.raises(AssertionError, match=r"auth\.test -> 200 ok"):
        fake.wait_for("views.open", timeout=0.1)


# ----------------------------------------------------------------------------------------------
# SlackDriver against a small Bolt app
# ----------------------------------------------------------------------------------------------

SETUP_VIEW: dict[str, Any] = {
    "type": "modal",
    "callback_id": "setup",
    "title": _text("Email sync"),
    "submit": _text("Next"),
    "notify_on_close": True,
    "blocks": [
        {
            "type": "actions",
            "block_id": "nav",
            "elements": [{"type": "button", "action_id": "refresh", "text": _text("Refresh"), "value": "r1"}],
        },
        {
            "type": "input",
            "block_id": "mode",
            "label": _text("What to sync"),
            "element": {"type": "static_select", "action_id": "pick", "options": [_option("all"), _option("labels")]},
        },
        {
            "type": "input",
            "block_id": "email",
            "label": _text("Email"),
            "element": {"type": "plain_text_input", "action_id": "value"},
        },
        {
            "type": "input",
            "block_id": "contact",
            "label": _text("Contact"),
            "optional": True,
            "element": {"type": "external_select", "action_id": "search", "min_query_length": 1},
        },
    ],
}


class Recorder:
    def __init__(self) -> None:
        self.bodies: dict[str, list[dict[str, Any]]] = {}
        self.headers: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def add(self, kind: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.bodies.setdefault(kind, []).append(body)


def build_app(fake: FakeSlack, seen: Recorder) -> App:
    app = App(signing_secret=SECRET, client=WebClient(base_url=fake.api_url, token="xoxb-test"))

    @app.command("/emailsync")
    def command(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        ack()
        seen.add("command", body)
        client.views_open(trigger_id=body["trigger_id"], view=SETUP_VIEW)
        respond("Opening the setup…")

    @app.action("refresh")
    def refresh(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        ack()
        seen.add("action", body)
        view = body.get("view")
        if view is None:  # a button in a message
            respond(text="Refreshed", replace_original=True)
            return
        client.views_update(view_id=view["id"], hash=view["hash"], view={**SETUP_VIEW, "private_metadata": "r"})

    @app.view("setup")
    def submit(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        seen.add("submission", body)
        values = view["state"]["values"]
        email = values["email"]["value"]["value"]
        if "@" not in email:
            ack(response_action="errors", errors={"email": "That is not an email address"})
        elif values["mode"]["pick"]["selected_option"]["value"] == "labels":
            ack(response_action="update", view={**SETUP_VIEW, "callback_id": "labels", "title": _text("Labels")})
        else:
            ack()

    @app.view_closed("setup")
    def closed(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        seen.add("closed", body)

    @app.options("search")
    def options(ack: Ack, body: dict[str, Any]) -> None:
        seen.add("options", body)
        ack(options=[_option(f"{body['value']}-{i}") for i in range(3)])

    @app.event("app_home_opened")
    def home(event: dict[str, Any], client: WebClient, request: BoltRequest) -> None:
        seen.add("event", event)
        seen.headers.append(dict(request.headers))
        client.views_publish(user_id=event["user"], view={"type": "home", "blocks": [{"type": "divider"}]})

    return app


@pytest.fixture
def bolt(fake: FakeSlack) -> Iterator[tuple[SlackDriver, Recorder, BoltServer]]:
    seen = Recorder()
    app = build_app(fake, seen)  # App() calls auth.test on the fake right here
    with serve_bolt(app) as server, SlackDriver(server.url, SECRET, fake) as driver:
        yield driver, seen, server


def test_driver_slash_command_opens_a_modal(fake: FakeSlack, bolt: tuple[SlackDriver, Recorder, BoltServer]) -> None:
    driver, seen, _ = bolt
    assert fake.calls[0].method == "auth.test"
    response = driver.slash_command("setup", user_id="U0005")
    assert response.status_code == 200
    opened = fake.wait_for("views.open")[0]
    assert opened.ok, opened.response
    assert seen.bodies["command"][0]["text"] == "setup"
    assert seen.bodies["command"][0]["user_id"] == "U0005"
    fake.wait_for("response_url")
    assert fake.response_url_posts[0]["text"] == "Opening the setup…"
    view = fake.current_view("U0005")
    assert view is not None and view["callback_id"] == "setup"


def _open_setup(fake: FakeSlack, driver: SlackDriver) -> str:
    driver.slash_command()
    return str(fake.wait_for("views.open")[0].response["view"]["id"])


def test_driver_block_action_in_a_view(fake: FakeSlack, bolt: tuple[SlackDriver, Recorder, BoltServer]) -> None:
    driver, seen, _ = bolt
    view_id = _open_setup(fake, driver)
    assert driver.block_action("refresh", view=view_id).status_code == 200
    update = fake.wait_for("views.update")[0]
    assert update.ok, update.response
    action = seen.bodies["action"][0]
    assert action["actions"][0] == {**action["actions"][0], "block_id": "nav", "type": "button", "value": "r1"}
    assert action["container"] == {"type": "view", "view_id": view_id}
    assert fake.views[view_id]["private_metadata"] == "r"
    # the view the app saw is the stored one; a second click carries the new hash
    driver.block_action("refresh", view=view_id)
    assert fake.wait_for("views.update", count=2)[1].ok
    with pytest.raises(AssertionError, match="no element with action_id 'nope'"):
        driver.block_action("nope", view=view_id)


def test_driver_block_action_on_a_message(fake: FakeSlack, bolt: tuple[SlackDriver, Recorder, BoltServer]) -> None:
    driver, seen, _ = bolt
    client = WebClient(base_url=fake.api_url, token="xoxb-test")
    blocks = [
        {
            "type": "actions",
            "block_id": "acts",
            "elements": [{"type": "button", "action_id": "refresh", "text": _text("Again"), "value": "m"}],
        }
    ]
    posted = client.chat_postMessage(channel="C0001", text="Synced", blocks=blocks)
    message = fake.messages[(posted["channel"], posted["ts"])]
    seen_before = len(seen.bodies.get("action", []))
    driver.block_action("refresh", container_message=message)
    body = seen.bodies["action"][seen_before]
    assert body["container"]["message_ts"] == posted["ts"] and body["message"]["text"] == "Synced"
    assert body["response_url"].startswith(fake.base_url)
    fake.wait_for("response_url")
    assert fake.messages[(posted["channel"], posted["ts"])]["text"] == "Refreshed"
    assert "blocks" not in fake.messages[(posted["channel"], posted["ts"])]


def test_driver_view_submission(fake: FakeSlack, bolt: tuple[SlackDriver, Recorder, BoltServer]) -> None:
    driver, seen, _ = bolt
    view_id = _open_setup(fake, driver)

    with pytest.raises(AssertionError, match="required input 'Email' is empty"):
        driver.view_submission(view_id, {"mode": {"pick": "all"}})
    with pytest.raises(AssertionError, match="not an option"):
        driver.view_submission(view_id, {"mode": {"pick": "some"}, "email": {"value": "a@b.c"}})

    response = driver.view_submission(view_id, {"mode": {"pick": "all"}, "email": {"value": "nope"}})
    assert response.json() == {"response_action": "errors", "errors": {"email": "That is not an email address"}}
    assert fake.is_open(view_id)
    state = seen.bodies["submission"][0]["view"]["state"]["values"]
    assert state["mode"]["pick"]["selected_option"] == {**_option("all"), "text": {**_text("all"), "emoji": True}}
    assert state["contact"]["search"] == {"type": "external_select", "selected_option": None}

    driver.view_submission(view_id, {"mode": {"pick": "labels"}, "email": {"value": "me@example.com"}})
    assert fake.views[view_id]["callback_id"] == "labels" and fake.is_open(view_id)

    other = _open_setup_again(fake, driver)
    assert driver.view_submission(other, {"mode": {"pick": "all"}, "email": {"value": "me@example.com"}}).text == ""
    assert not fake.is_open(other), "a plain ack closes the modal"


def _open_setup_again(fake: FakeSlack, driver: SlackDriver) -> str:
    driver.slash_command()
    return str(fake.wait_for("views.open", count=2)[-1].response["view"]["id"])


def test_driver_view_closed_and_options(fake: FakeSlack, bolt: tuple[SlackDriver, Recorder, BoltServer]) -> None:
    driver, seen, _ = bolt
    view_id = _open_setup(fake, driver)
    response = driver.block_suggestion("search", "ann", view=view_id)
    assert [o["value"] for o in response.json()["options"]] == ["ann-0", "ann-1", "ann-2"]
    assert seen.bodies["options"][0]["block_id"] == "contact"

    closed = driver.view_closed(view_id)
    assert closed is not None and closed.status_code == 200
    assert seen.bodies["closed"][0]["view"]["id"] == view_id
    assert not fake.is_open(view_id)
    with pytest.raises(AssertionError, match="closed"):
        driver.block_action("refresh", view=view_id)


def test_driver_events_and_retries(fake: FakeSlack, bolt: tuple[SlackDriver, Recorder, BoltServer]) -> None:
    driver, seen, _ = bolt
    assert driver.app_home_opened("U0009").status_code == 200
    fake.wait_for("views.publish")
    assert fake.home_tabs["U0009"]["type"] == "home"
    event_id = driver.last_payload["event_id"]  # type: ignore[index]
    driver.event({"type": "app_home_opened", "user": "U0009", "tab": "home"}, retry_num=1, event_id=event_id)
    fake.wait_for("views.publish", count=2)
    assert seen.headers[-1]["x-slack-retry-num"] == ["1"]
    assert seen.headers[-1]["x-slack-retry-reason"] == ["http_timeout"]

    challenge = driver.url_verification("abc123")
    assert challenge.status_code == 200 and challenge.json() == {"challenge": "abc123"}


def test_driver_signature_is_checked(fake: FakeSlack, bolt: tuple[SlackDriver, Recorder, BoltServer]) -> None:
    driver, seen, _ = bolt
    assert driver.slash_command(bad_signature=True).status_code == 401
    assert driver.slash_command(timestamp=int(time.time()) - 600).status_code == 401
    assert driver.event({"type": "app_home_opened", "user": "U1"}, bad_signature=True).status_code == 401
    assert "command" not in seen.bodies and not fake.calls_to("views.open")
    assert driver.slash_command().status_code == 200


# ----------------------------------------------------------------------------------------------
# Files and message shortcuts
# ----------------------------------------------------------------------------------------------


def test_files_info_and_private_downloads_are_strict(fake: FakeSlack, client: WebClient) -> None:
    nowhere = fake.add_file(user_id="U0001", name="a.csv", content=b"email\n")
    shared = fake.add_file(user_id="U0001", name="b.csv", content=b"email\nx@y.test\n", channel="DU0001")
    with pytest.raises(SlackApiError) as exc:
        client.files_info(file=nowhere["id"])  # shared nowhere the bot is
    assert _error(exc) == "file_not_found"
    with pytest.raises(SlackApiError) as exc:
        client.api_call("files.info", params={})
    assert _error(exc) == "invalid_arguments"
    info = client.files_info(file=shared["id"])["file"]
    assert (info["user"], info["ims"], info["filetype"], info["size"]) == ("U0001", ["DU0001"], "csv", 15)

    url = info["url_private_download"]
    ok = httpx.get(url, headers={"Authorization": "Bearer xoxb-test"})
    assert (ok.status_code, ok.content, ok.headers["content-type"]) == (200, b"email\nx@y.test\n", "text/csv")
    # Like Slack: no token, a revoked one, or another workspace's gets the sign-in page (200, HTML).
    fake.tokens["xoxb-other"] = {"team_id": "T0002", "user_id": "UBOT2", "bot_id": "B2"}
    fake.revoked_tokens.add("xoxb-revoked")
    for headers in ({}, {"Authorization": "Bearer xoxb-revoked"}, {"Authorization": "Bearer xoxb-other"}):
        page = httpx.get(url, headers=headers)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert [c.response["ok"] for c in fake.calls_to("files.download")] == [True, False, False, False]


def test_driver_message_shortcut(fake: FakeSlack) -> None:
    app = App(signing_secret=SECRET, client=WebClient(base_url=fake.api_url, token="xoxb-test"))
    seen: list[dict[str, Any]] = []

    @app.shortcut("emails_with_person")
    def shortcut(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        seen.append(body)
        client.views_open(trigger_id=body["trigger_id"], view=_modal())

    with serve_bolt(app) as server, SlackDriver(server.url, SECRET, fake) as driver:
        message = {"text": "ask <mailto:a@b.test|a@b.test>", "user": "U0009", "ts": "1.000002"}
        assert driver.message_shortcut("emails_with_person", message, user_id="U0005").status_code == 200
        assert fake.wait_for("views.open")[0].ok
    body = seen[0]
    assert (body["type"], body["callback_id"], body["user"]["id"], body["message_ts"]) == (
        "message_action",
        "emails_with_person",
        "U0005",
        "1.000002",
    )
    assert body["message"]["text"] == message["text"] and body["channel"]["id"] == "C0001"
