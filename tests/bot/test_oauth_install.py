"""Many workspaces: the OAuth install over HTTP against the fake Slack, tokens encrypted, uninstall, rotation."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from sqlalchemy import text
from sqlmodel import col, select

from bot.slack_app import BOT_SCOPES
from bot.tokens import NotInstalled, client_for_team, installation_store
from models.db import session_scope
from models.tables import EmailAccount
from tests.support.slack_app import SlackHarness, running_app
from tests.support.teams import seed_team, team_rows

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "1111.2222"
TEAM = "T0002"  # the fake's oauth.v2.access installs into this workspace
COOKIE = "slack-app-oauth-state"


@pytest.fixture
def oauth_app(tmp_path, dovecot) -> Iterator[SlackHarness]:
    """The app in OAuth mode: no SLACK_BOT_TOKEN, installed per workspace through /slack/install."""
    with running_app(
        tmp_path, dovecot, SLACK_BOT_TOKEN=None, SLACK_CLIENT_ID=CLIENT_ID, SLACK_CLIENT_SECRET="fake-secret"
    ) as harness:
        harness.fake.client_id = CLIENT_ID
        harness.fake.oauth_redirect_uri = f"{harness.base_url}/slack/oauth_redirect"
        harness.driver.team_id = TEAM
        yield harness


def start_install(app: SlackHarness, http: httpx.Client) -> tuple[str, dict[str, list[str]]]:
    """GET /slack/install: the state (from its cookie) and the authorize URL's parameters."""
    page = http.get(f"{app.base_url}/slack/install")
    assert page.status_code == 200
    match = re.search(r'<a href="([^"]+)"', page.text)
    assert match is not None, page.text
    authorize = urlsplit(html.unescape(match.group(1)))
    params = parse_qs(authorize.query)
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={params['state'][0]};") and "HttpOnly" in cookie
    assert authorize.path == "/oauth/v2/authorize"
    return params["state"][0], params


def install(app: SlackHarness, code: str = "code-1") -> httpx.Response:
    """The whole browser round trip: the install page, Slack's consent (skipped), the redirect back."""
    with httpx.Client() as http:
        state, _ = start_install(app, http)
        return http.get(
            f"{app.base_url}/slack/oauth_redirect",
            params={"code": code, "state": state},
            headers={"Cookie": f"{COOKIE}={state}"},
        )


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def accounts_of(app: SlackHarness, team_id: str) -> dict[str, tuple[str, str | None]]:
    with session_scope(app.services.db) as session:
        rows = session.exec(select(EmailAccount).where(col(EmailAccount.team_id) == team_id)).all()
        return {a.user_id: (a.state, a.paused_reason) for a in rows}


def test_install_stores_the_installation_with_its_tokens_encrypted(oauth_app):
    bot_token = oauth_app.fake.oauth_response["access_token"]
    with httpx.Client() as http:
        state, params = start_install(oauth_app, http)
        assert params["client_id"] == [CLIENT_ID]
        assert params["scope"] == [",".join(BOT_SCOPES)]
        assert params["redirect_uri"] == [f"{oauth_app.base_url}/slack/oauth_redirect"]
        done = http.get(
            f"{oauth_app.base_url}/slack/oauth_redirect",
            params={"code": "code-1", "state": state},
            headers={"Cookie": f"{COOKIE}={state}"},
        )
    assert done.status_code == 200 and "Thank you" in done.text
    access = oauth_app.fake.calls_to("oauth.v2.access")
    assert len(access) == 1 and access[0].status == 200 and access[0].args["code"] == "code-1"

    installation = installation_store(oauth_app.services).find_installation(enterprise_id=None, team_id=TEAM)
    assert installation is not None and installation.bot_token == bot_token
    assert installation.bot_user_id == "UBOT2" and installation.user_id == "U0201"
    with oauth_app.services.db.connect() as conn:
        rows = conn.execute(text("SELECT * FROM slack_installation")).all()
    assert len(rows) == 1 and TEAM in repr(rows)
    assert bot_token not in repr(rows)
    for path in Path(oauth_app.services.settings.database_url.split("///", 1)[1]).parent.glob("app.db*"):
        assert bot_token.encode() not in path.read_bytes()  # not in the database file or its WAL either

    # The workspace can use the app now: Bolt finds the token and answers the command.
    assert oauth_app.driver.slash_command("help", team_id=TEAM).status_code == 200
    post = oauth_app.fake.wait_for("response_url")[0]
    assert "/emailsync setup" in json.dumps(post.args)
    assert any(c.token == bot_token for c in oauth_app.fake.calls_to("auth.test"))


def test_a_workspace_that_did_not_install_gets_nothing(oauth_app):
    install(oauth_app)
    seed_team(oauth_app.services.db, oauth_app.services.secrets, "T0009", installation=False)
    calls = len(oauth_app.fake.calls)
    assert oauth_app.driver.slash_command("status", team_id="T0009").status_code == 200
    post = oauth_app.fake.wait_for("response_url")[0]
    assert "installation with this app is no longer available" in post.args["text"]
    assert "t0009.test" not in json.dumps(post.args)  # no status of that workspace's mailboxes
    assert [c.method for c in oauth_app.fake.calls[calls:]] == ["response_url"]


def test_wrong_or_missing_state_is_refused(oauth_app):
    with httpx.Client() as http:
        state, _ = start_install(oauth_app, http)
        redirect = f"{oauth_app.base_url}/slack/oauth_redirect"
        no_cookie = http.get(redirect, params={"code": "c1", "state": state})
        assert no_cookie.status_code == 400
        forged = "not-a-state-we-issued"
        wrong = http.get(redirect, params={"code": "c1", "state": forged}, headers={"Cookie": f"{COOKIE}={forged}"})
        assert wrong.status_code == 401
        missing = http.get(redirect, params={"code": "c1"}, headers={"Cookie": f"{COOKIE}={state}"})
        assert missing.status_code == 400
        ok = http.get(redirect, params={"code": "c1", "state": state}, headers={"Cookie": f"{COOKIE}={state}"})
        assert ok.status_code == 200
        replayed = http.get(redirect, params={"code": "c2", "state": state}, headers={"Cookie": f"{COOKIE}={state}"})
        assert replayed.status_code == 401  # a state is used once
    assert [c.args["code"] for c in oauth_app.fake.calls_to("oauth.v2.access")] == ["c1"]


def test_a_refused_code_stores_nothing(oauth_app):
    oauth_app.fake.client_secret = "another-secret"  # Slack says bad_client_secret
    assert install(oauth_app).status_code == 401
    assert installation_store(oauth_app.services).find_installation(enterprise_id=None, team_id=TEAM) is None


@pytest.mark.parametrize(
    "event",
    [
        {"type": "app_uninstalled"},
        {"type": "tokens_revoked", "tokens": {"oauth": ["U0201"], "bot": ["UBOT2"]}},
    ],
    ids=["app_uninstalled", "tokens_revoked"],
)
def test_uninstall_deletes_the_tokens_and_pauses_that_workspace(oauth_app, event):
    install(oauth_app)
    seed_team(oauth_app.services.db, oauth_app.services.secrets, TEAM, installation=False)
    seed_team(oauth_app.services.db, oauth_app.services.secrets, "T0001")
    store = installation_store(oauth_app.services)
    assert store.find_installation(enterprise_id=None, team_id="T0001") is not None

    assert oauth_app.driver.event(event, team_id=TEAM).status_code == 200

    wait_until(lambda: store.find_installation(enterprise_id=None, team_id=TEAM) is None)
    wait_until(lambda: set(accounts_of(oauth_app, TEAM).values()) == {("paused", "uninstalled")})
    assert set(accounts_of(oauth_app, "T0001").values()) == {("active", None)}
    assert store.find_installation(enterprise_id=None, team_id="T0001") is not None
    assert team_rows(oauth_app.services.db, TEAM)["messages"] == 6  # the synced mail stays
    with pytest.raises(NotInstalled):
        client_for_team(oauth_app.services, TEAM)


def test_reinstalling_resumes_what_the_uninstall_paused(oauth_app):
    install(oauth_app, "code-1")
    seed_team(oauth_app.services.db, oauth_app.services.secrets, TEAM, users=("U1", "U2", "U3"), installation=False)
    with session_scope(oauth_app.services.db) as session:
        for account in session.exec(select(EmailAccount).where(EmailAccount.user_id != "U1")).all():
            account.state, account.paused_reason = "paused", "user" if account.user_id == "U2" else "user_deactivated"
            session.add(account)
    oauth_app.driver.event({"type": "app_uninstalled"}, team_id=TEAM)
    wait_until(lambda: accounts_of(oauth_app, TEAM)["U1"] == ("paused", "uninstalled"))

    assert install(oauth_app, "code-2").status_code == 200

    assert accounts_of(oauth_app, TEAM) == {
        "U1": ("active", None),
        "U2": ("paused", "user"),
        "U3": ("paused", "user_deactivated"),
    }


def test_revoking_only_a_user_token_keeps_the_workspace_running(oauth_app):
    oauth_app.fake.oauth_response["authed_user"] = {"id": "U0201", "access_token": "xoxp-installer", "scope": "x"}
    install(oauth_app)
    seed_team(oauth_app.services.db, oauth_app.services.secrets, TEAM, installation=False)
    store = installation_store(oauth_app.services)
    assert store.find_installation(enterprise_id=None, team_id=TEAM).user_token == "xoxp-installer"

    oauth_app.driver.event({"type": "tokens_revoked", "tokens": {"oauth": ["U0201"], "bot": []}}, team_id=TEAM)

    wait_until(lambda: store.find_installation(enterprise_id=None, team_id=TEAM).user_token is None)
    assert store.find_bot(enterprise_id=None, team_id=TEAM) is not None
    assert set(accounts_of(oauth_app, TEAM).values()) == {("active", None)}


def test_a_deactivated_person_is_paused_in_that_workspace_only(oauth_app):
    install(oauth_app)
    seed_team(oauth_app.services.db, oauth_app.services.secrets, TEAM, installation=False)
    seed_team(oauth_app.services.db, oauth_app.services.secrets, "T0001")
    user = {"id": "U1", "team_id": TEAM, "deleted": False, "name": "u1"}
    oauth_app.driver.event({"type": "user_change", "user": user}, team_id=TEAM)  # a rename: nothing happens
    oauth_app.driver.event({"type": "user_change", "user": {**user, "deleted": True}}, team_id=TEAM)
    wait_until(lambda: accounts_of(oauth_app, TEAM)["U1"] == ("paused", "user_deactivated"))
    assert accounts_of(oauth_app, TEAM)["U2"] == ("active", None)
    assert set(accounts_of(oauth_app, "T0001").values()) == {("active", None)}
    assert installation_store(oauth_app.services).find_installation(enterprise_id=None, team_id=TEAM) is not None


def test_client_for_team_refreshes_an_expiring_token_first(oauth_app):
    fake = oauth_app.fake
    fake.oauth_response.update(access_token="xoxe.xoxb-1-first", refresh_token="xoxe-1-first-refresh", expires_in=120)
    install(oauth_app)
    store = installation_store(oauth_app.services)

    client = client_for_team(oauth_app.services, TEAM)

    refresh = [c for c in fake.calls_to("oauth.v2.access") if c.args.get("grant_type") == "refresh_token"]
    assert len(refresh) == 1 and refresh[0].args["refresh_token"] == "xoxe-1-first-refresh"
    new_token = refresh[0].response["access_token"]
    assert client.token == new_token and client.base_url == fake.api_url
    saved = store.find_installation(enterprise_id=None, team_id=TEAM)
    assert saved.bot_token == new_token and saved.bot_refresh_token == refresh[0].response["refresh_token"]
    assert saved.bot_token_expires_at > time.time() + 40000
    with oauth_app.services.db.connect() as conn:
        assert new_token not in repr(conn.execute(text("SELECT * FROM slack_installation")).all())
    assert client.chat_postMessage(channel="U0201", text="hello")["ok"]
    # Fresh now: the next client uses it as it is.
    assert client_for_team(oauth_app.services, TEAM).token == new_token
    assert len(fake.calls_to("oauth.v2.access")) == 2


def test_bolt_refreshes_an_expiring_token_at_slack_api_url_while_handling_a_request(oauth_app):
    fake = oauth_app.fake
    fake.oauth_response.update(access_token="xoxe.xoxb-1-first", refresh_token="xoxe-1-first-refresh", expires_in=3600)
    install(oauth_app)
    assert client_for_team(oauth_app.services, TEAM).token == "xoxe.xoxb-1-first"  # not within our 10 minutes

    oauth_app.driver.slash_command("help", team_id=TEAM)  # but within Bolt's two hours

    fake.wait_for("response_url")
    refresh = [c for c in fake.calls_to("oauth.v2.access") if c.args.get("grant_type") == "refresh_token"]
    assert len(refresh) == 1
    saved = installation_store(oauth_app.services).find_installation(enterprise_id=None, team_id=TEAM)
    assert saved.bot_token == refresh[0].response["access_token"]


def test_single_workspace_mode_uses_the_bot_token(slack):
    assert client_for_team(slack.deps, "T0001") is slack.deps.client
    assert client_for_team(slack.services, "T0001").token == "xoxb-test"
    assert slack.deps.client.token == "xoxb-test"


def test_the_install_asks_for_the_manifest_scopes():
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert list(BOT_SCOPES) == manifest["oauth_config"]["scopes"]["bot"]
    assert manifest["oauth_config"]["redirect_urls"] == ["https://YOUR-HOST/slack/oauth_redirect"]
