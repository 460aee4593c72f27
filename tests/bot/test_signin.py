"""Sign in with Google and Microsoft, issue 9's tests 1-7: real parts (a local provider, Dovecot introspecting its
tokens, aiosmtpd with XOAUTH2, the app over HTTP against the fake Slack, Chromium for the consent), no internet."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text, update
from sqlmodel import select

from bot import ids
from bot.slack_app import slack_notifier
from bot.web_limits import redact_target
from flows import setup as setup_flow
from flows.export import export_messages
from models import accounts as account_queries
from models.clock import utcnow
from models.db import session_scope
from models.tables import EmailAccount
from sync.engine import Outcome, sync_account
from sync.errors import LeaseLost
from sync.oauth_tokens import TokenKeeper, lease_of
from sync.scheduler import Clock, LocalDispatcher
from tests.support.cli import cli_env, run_cli
from tests.support.mail import make_message
from tests.support.signin import SignInStack
from tests.support.signin_browser import SignInBrowser
from tests.support.slack_app import SlackHarness, running_app

DAY = dt.timedelta(days=1)


# ------------------------------------------------------------------------------------------------ fixtures


# ------------------------------------------------------------------------------------------------- helpers
def mailbox(stack: SignInStack, name: str, *messages: tuple[str, dt.timedelta]) -> str:
    """A fresh address with its Dovecot mailbox, holding messages (subject, age)."""
    email = f"{name}-{uuid.uuid4().hex[:6]}@example.com"
    stack.dovecot.add_mailbox(email)
    seed(stack, email, *messages)
    return email


def seed(stack: SignInStack, email: str, *messages: tuple[str, dt.timedelta]) -> None:
    now = dt.datetime.now(dt.UTC)
    stack.dovecot.seed_maildir(
        email, "INBOX", [(make_message(subject=s, date=now - age), now - age) for s, age in messages]
    )


def link_of(view: dict) -> str:
    block = next(b for b in view["blocks"] if b.get("block_id") == ids.B_CONNECT)
    return block["elements"][0]["url"]


def text_of(view: dict) -> str:
    return json.dumps(view["blocks"], ensure_ascii=False)


def tick(app: SlackHarness, stack: SignInStack, **config: object) -> int:
    """One scheduler tick, as the worker runs it (Slack notifier included); returns how many syncs it ran."""
    app.services.notifier = slack_notifier(app.services)
    deps = app.services.engine_deps("test")
    deps.config.ssl_context = stack.dovecot.ssl_context
    for name, value in config.items():
        setattr(deps.config, name, value)
    dispatcher = LocalDispatcher(deps, workers=1, slice_seconds=None)
    claimed = len(Clock(deps, dispatcher, tick_seconds=1).tick())
    dispatcher.shutdown()
    return claimed


def make_due(app: SlackHarness) -> None:
    with session_scope(app.services.db) as session:
        session.execute(update(EmailAccount).values(next_sync_at=utcnow()))


def account(app: SlackHarness) -> EmailAccount:
    with session_scope(app.services.db) as session:
        return session.exec(select(EmailAccount)).one()


def accounts(app: SlackHarness) -> list[EmailAccount]:
    with session_scope(app.services.db) as session:
        return list(session.exec(select(EmailAccount)).all())


def signed_in_account(app: SlackHarness, stack: SignInStack, email: str, **draft: object) -> int:
    """Connect `email` by signing in on the connect page (no JavaScript), then finish the setup with `draft`."""
    state, token = setup_flow.start_setup(app.services.db, team_id="T0001", user_id="U0001")
    with SignInBrowser(app.base_url) as browser:
        done = browser.get(browser.sign_in(f"{app.base_url}/connect/{token}", stack.idp, typed=email, as_email=email))
    assert done.status_code == 200 and "is connected" in done.text, done.text
    if draft:
        setup_flow.save_step(app.services.db, state.session_id, team_id="T0001", user_id="U0001", step="start", **draft)
    return setup_flow.finish(app.services.db, state.session_id, team_id="T0001", user_id="U0001")


def dms(app: SlackHarness, words: str) -> list:
    return [c for c in app.fake.calls_to("chat.postMessage") if words in c.args.get("text", "")]


# ------------------------------------------------------------------------------------ 1. end to end (Chromium)
def test_1_sign_in_end_to_end(app: SlackHarness, stack: SignInStack, page) -> None:
    email = mailbox(stack, "ann", ("recent one", 5 * DAY), ("recent two", 12 * DAY), ("too old", 80 * DAY))
    fake, driver = app.fake, app.driver
    assert driver.slash_command("").status_code == 200
    opened = fake.wait_for("views.open")[0].response["view"]

    page.goto(link_of(opened))
    page.fill("#email", email)
    page.click(f"#sign-in-{stack.name}")
    # The provider's own consent page (the local one), prefilled with the address typed on ours.
    page.wait_for_selector("#allow")
    assert page.input_value("#email") == email and stack.idp.flavour.display_name in page.title()
    page.click("#allow")
    page.wait_for_selector("#done")
    assert f"{email} is connected" in page.inner_text("#done")
    assert page.url.startswith(f"{app.base_url}/oauth/callback?")
    fake.wait_for("views.update", predicate=lambda c: "Step 2 of 4" in text_of(c.args["view"]))

    view_id = opened["id"]
    driver.view_submission(
        view_id, {ids.B_TRACKING: {ids.A_TRACKING: []}, ids.B_VISIBILITY: {ids.A_VISIBILITY: "shared"}}
    )
    assert "Step 3 of 4" in text_of(fake.view(view_id))
    driver.view_submission(view_id, {ids.B_SYNC_MODE: {ids.A_SYNC_MODE: "all"}})
    assert "Step 4 of 4" in text_of(fake.view(view_id))
    # The preview logs in the same way (XOAUTH2) to count the window.
    driver.block_action(ids.A_START, view=view_id, selected_option="1m")
    fake.wait_for("views.update", predicate=lambda c: "This window holds 2 messages" in text_of(c.args["view"]))
    response = driver.view_submission(view_id, {ids.B_START: {ids.A_START: "1m"}, ids.B_SCOPE: {ids.A_SCOPE: "all"}})
    assert response.json() == {"response_action": "clear"}

    assert tick(app, stack) == 1
    rows = list(export_messages(app.services.db, account_id=account(app).id or 0))
    assert sorted(r["subject"] for r in rows) == ["recent one", "recent two"]
    stored = account(app)
    assert (stored.auth_kind, stored.oauth_provider, stored.state, stored.username) == (
        "oauth",
        stack.name,
        "active",
        email,
    )
    assert f"Signed in with {stack.idp.flavour.display_name}" in json.dumps(fake.home_tabs["U0001"])


# ------------------------------------------------------------------------- 2. expiry during a long sync
def test_2_token_expires_during_a_long_sync(app: SlackHarness, stack: SignInStack) -> None:
    email = mailbox(stack, "long", *[(f"message {n}", (n + 1) * 60 * dt.timedelta(seconds=1)) for n in range(12)])
    account_id = signed_in_account(app, stack, email)
    stack.idp.reset()
    deps = app.services.engine_deps("test")
    deps.config.ssl_context, deps.config.batch_size, deps.config.token_margin = stack.dovecot.ssl_context, 3, 30
    assert sync_account(deps, account_id, budget_seconds=0.001) is Outcome.MORE  # one batch, then the slice ends
    assert stack.idp.token_calls["refresh_token"] == 0  # the token from the sign-in still lives a minute

    stack.idp.expire_access_tokens(email)  # the access token dies in the middle of the run
    slices = 1
    while (outcome := sync_account(deps, account_id, budget_seconds=0.001)) is Outcome.MORE:
        slices += 1
    assert outcome is Outcome.DONE and slices >= 3  # the run went on over several slices after the expiry
    assert len(list(export_messages(app.services.db, account_id=account_id))) == 12
    refreshes = stack.idp.token_requests("refresh_token")
    assert [r.status for r in refreshes] == [200]  # refused once at login, refreshed once under the lease
    spent = refreshes[0].form["refresh_token"]
    stored = app.services.secrets.decrypt(account(app).oauth_refresh_encrypted or "")
    assert stored != spent  # the rotated refresh token is the one kept
    # ... and it is the live one: the next refresh (due by the margin now) spends exactly it, successfully.
    seed(stack, email, ("after the refresh", dt.timedelta(minutes=1)))
    deps.config.token_margin = 3600
    assert sync_account(deps, account_id) is Outcome.DONE
    refreshes = stack.idp.token_requests("refresh_token")
    assert [r.status for r in refreshes] == [200, 200] and refreshes[1].form["refresh_token"] == stored


def test_2_no_refresh_without_the_lease(app: SlackHarness, stack: SignInStack) -> None:
    account_id = signed_in_account(app, stack, mailbox(stack, "fenced"))
    stack.idp.reset()
    keeper = TokenKeeper(app.services.db, app.services.secrets, app.services.oauth, margin=3600)
    with lease_of(app.services.db, account_id, "someone-else") as theirs:
        assert theirs is not None
        with session_scope(app.services.db) as session:  # our lease was taken over: its fence fails
            account_queries.release_lease(session, account_id=account_id, owner="someone-else", token=0)

        def stale_fence():
            return lease_fence_of_nobody(app, account_id)

        with pytest.raises(LeaseLost):
            keeper.access_token(account_id, stale_fence, force=True)
    assert stack.idp.token_calls["refresh_token"] == 0  # the refresh token was never spent


def lease_fence_of_nobody(app: SlackHarness, account_id: int):
    from contextlib import contextmanager

    @contextmanager
    def fence():
        with session_scope(app.services.db) as session:
            if not account_queries.renew_lease(session, account_id=account_id, owner="ghost", token=99, ttl=60):
                raise LeaseLost("not ours")
            yield session

    return fence()


# ------------------------------------------------------------------------------ 3. two processes at once
def test_3_two_processes_refresh_once(app: SlackHarness, stack: SignInStack, tmp_path: Path) -> None:
    email = mailbox(stack, "twice", *[(f"m{n}", dt.timedelta(hours=n + 1)) for n in range(150)])
    account_id = signed_in_account(app, stack, email, start="1m")
    with session_scope(app.services.db) as session:  # the stored access token is about to expire for both
        session.execute(update(EmailAccount).values(oauth_expires_at=utcnow()))
    stack.idp.expire_access_tokens(email)
    stack.idp.reset()
    stack.idp.access_token_ttl = 3600  # the refreshed token lasts: the second process has no reason to refresh
    env = cli_env(tmp_path, stack.dovecot, DATABASE_URL=app.services.settings.database_url, **stack.settings())
    workdir = Path(env["EMAILSYNC_DATA_DIR"])
    workdir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bot", "--verbose", "sync", "--account", str(account_id)]  # lease lines are info
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    procs = [
        subprocess.Popen(command, env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-2000:]
        assert f"account {account_id}: done" in out
    assert [r.status for r in stack.idp.token_requests("refresh_token")] == [200]  # one refresh, no invalid_grant
    assert len(list(export_messages(app.services.db, account_id=account_id))) == 150
    leases = [line for _, err in results for line in err.splitlines() if "lease taken" in line]
    assert len(leases) >= 2  # both worked, one after the other


# ------------------------------------------------------------------------------------ 4. a revoked grant
def test_4_revoked_grant_then_reconnect(app: SlackHarness, stack: SignInStack) -> None:
    email = mailbox(stack, "revoked", ("before", 2 * DAY))
    signed_in_account(app, stack, email, start="1m", contact_scope="all", sync_mode="labels", folders=["INBOX"])
    assert tick(app, stack) == 1 and account(app).state == "active"
    stack.idp.reset()
    stack.idp.revoke_user(email)  # the person removed the app's access at Google / Microsoft
    make_due(app)
    assert tick(app, stack) == 1
    broken = account(app)
    assert broken.state == "needs_reauth" and broken.next_sync_at is None
    for _ in range(3):  # no retry storm: nothing is due until the person reconnects
        assert tick(app, stack) == 0
    assert stack.idp.token_calls["refresh_token"] == 1
    errors = dms(app, "stopped")
    assert len(errors) == 1 and "Reconnect" in json.dumps(errors[0].args)
    assert f"sign in with {stack.idp.flavour.display_name} again" in errors[0].args["text"]

    error_message = app.fake.messages[(errors[0].response["channel"], errors[0].response["ts"])]
    app.driver.block_action(ids.A_HOME_RECONNECT, container_message=error_message)
    reconnect = app.fake.wait_for("views.open")[-1].response["view"]
    link = next(e["url"] for b in reconnect["blocks"] if b["type"] == "actions" for e in b["elements"])
    with SignInBrowser(app.base_url) as browser:
        page, _ = browser.open(link)
        # The page knows the address and that it signed in with this provider before.
        assert f'value="{email}"' in page.text and 'id="lead"' in page.text
        assert f'id="sign-in-{stack.name}" class="lead"' in page.text
        done = browser.get(browser.sign_in(link, stack.idp, typed=email, as_email=email))
    assert done.status_code == 200 and f"{email} is reconnected" in done.text
    app.fake.wait_for(
        "chat.postMessage", predicate=lambda c: "reconnected with every setting kept" in c.args.get("text", "")
    )
    back = account(app)
    assert (back.state, back.sync_mode, back.start_option, back.auth_kind) == ("active", "labels", "1m", "oauth")
    seed(stack, email, ("after reconnect", dt.timedelta(minutes=5)))
    assert tick(app, stack) == 1
    subjects = [r["subject"] for r in export_messages(app.services.db, account_id=back.id or 0)]
    assert sorted(subjects) == ["after reconnect", "before"]
    assert dms(app, "is syncing again") == []  # the reconnect's own message was the one message about it


# ----------------------------------------------------------------------------- 5. token endpoint down
def test_5_token_endpoint_down_backs_off_quietly(app: SlackHarness, stack: SignInStack) -> None:
    email = mailbox(stack, "down", ("first", 2 * DAY))
    signed_in_account(app, stack, email, start="1m")
    assert tick(app, stack) == 1
    stack.idp.reset()
    stack.idp.fail("token", 503)
    make_due(app)  # the next poll: its token (60 s) is within the refresh margin
    assert tick(app, stack) == 1
    first = account(app)
    assert first.state == "error" and first.last_error_code == "provider_unavailable"
    assert first.next_sync_at is not None and first.next_sync_at > utcnow()
    assert tick(app, stack) == 0  # backing off: not due yet
    make_due(app)
    assert tick(app, stack) == 1  # still down: a longer wait
    second = account(app)
    assert second.failures == 2 and second.next_sync_at is not None
    assert stack.idp.token_calls["refresh_token"] == 2

    stack.idp.fail("token", 429, retry_after=120)  # throttled: wait as asked
    make_due(app)
    assert tick(app, stack) == 1
    wait = (account(app).next_sync_at or utcnow()) - utcnow()
    assert dt.timedelta(seconds=100) < wait <= dt.timedelta(seconds=121)

    stack.idp.recover()
    seed(stack, email, ("while it was down", dt.timedelta(minutes=3)))
    make_due(app)
    assert tick(app, stack) == 1
    recovered = account(app)
    assert (recovered.state, recovered.failures, recovered.last_error_code) == ("active", 0, None)
    assert "while it was down" in [r["subject"] for r in export_messages(app.services.db, account_id=recovered.id or 0)]
    assert dms(app, "stopped") == [] and dms(app, "syncing again") == []  # never a DM about it


# ------------------------------------------------------------------------------ 6. state and identity
def test_6_tampered_replayed_and_foreign_states_are_refused(app: SlackHarness, stack: SignInStack) -> None:
    email = mailbox(stack, "state")
    _, token = setup_flow.start_setup(app.services.db, team_id="T0001", user_id="U0001")
    _, other_token = setup_flow.start_setup(app.services.db, team_id="T0001", user_id="U0002")
    link, other_link = f"{app.base_url}/connect/{token}", f"{app.base_url}/connect/{other_token}"
    with SignInBrowser(app.base_url) as ann, SignInBrowser(app.base_url) as bob:
        callback = ann.sign_in(link, stack.idp, typed=email, as_email=email)
        tampered = ann.get(callback.replace("state=", "state=x"))
        assert tampered.status_code == 400 and "This sign-in is not valid" in tampered.text
        # Another person's browser (with a sign-in of its own going on) opening Ann's callback.
        bob.sign_in(other_link, stack.idp, as_email=email)
        foreign = bob.get(callback)
        assert foreign.status_code == 403 and "started somewhere else" in foreign.text
        replayed = ann.get(callback)  # the state was used up by the refused attempt
        assert replayed.status_code == 400 and "not valid" in replayed.text
        assert accounts(app) == []

        # A clean run, then the same callback once more: refused, still one account.
        callback = ann.sign_in(link, stack.idp, typed=email, as_email=email)
        assert "is connected" in ann.get(callback).text
        again = ann.get(callback)
        assert again.status_code in (400, 410) and len(accounts(app)) == 1
    assert stack.idp.token_calls["authorization_code"] == 1  # refused callbacks never reached the token endpoint


def test_6_another_address_than_typed_waits_for_the_choice(app: SlackHarness, stack: SignInStack) -> None:
    typed = mailbox(stack, "typed")
    signed = mailbox(stack, "signed")
    _, token = setup_flow.start_setup(app.services.db, team_id="T0001", user_id="U0001")
    link = f"{app.base_url}/connect/{token}"
    with SignInBrowser(app.base_url) as browser:
        choose = browser.get(browser.sign_in(link, stack.idp, typed=typed, as_email=signed))
        assert choose.status_code == 200
        assert f'id="typed">{typed}<' in choose.text and f'id="signed-in">{signed}<' in choose.text
        assert accounts(app) == []  # nothing stored until they choose
        # "Sign in again": back to the provider, for the typed address this time.
        again = browser.choose(choose, "again")
        assert again.status_code == 302 and "select_account" in again.headers["location"]
        assert typed.replace("@", "%40") in again.headers["location"]
        assert accounts(app) == []
        choose = browser.get(stack.idp.approve(again.headers["location"], email=signed))
        assert f'id="signed-in">{signed}<' in choose.text
        done = browser.choose(choose, "connect")  # connect the signed-in address after all
        assert done.status_code == 200 and f"{signed} is connected" in done.text
        assert browser.choose(choose, "connect").status_code == 400  # a choice is answered once
    stored = accounts(app)
    assert [(a.email, a.auth_kind) for a in stored] == [(signed, "oauth")]
    assert stack.idp.active_grants(signed) == 1  # the grant given up by "sign in again" was revoked


# ----------------------------------------------------------------------------------- 7. tokens nowhere
def test_7_no_token_in_the_database_logs_exports_or_slack(
    app: SlackHarness, stack: SignInStack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    email = mailbox(stack, "secret", ("hello", 3 * DAY))
    signed_in_account(app, stack, email, start="1m")
    assert tick(app, stack) == 1  # with a refresh: the sign-in's token lives 60 s, inside the margin
    assert stack.idp.token_calls["refresh_token"] >= 1
    # doctor logs in the way a sync does (XOAUTH2; a refresh under the lease when the token is about to expire).
    env = cli_env(tmp_path, stack.dovecot, DATABASE_URL=app.services.settings.database_url, **stack.settings())
    doctor = run_cli(env, "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks[f"account 1 ({email})"]["ok"], doctor.stdout
    assert f"(signed in with {stack.idp.flavour.display_name})" in checks[f"account 1 ({email})"]["detail"]
    # Every token the provider issued for this address (its own records: the test server keeps them in memory).
    secrets = [t for t, v in stack.idp._access.items() if v.grant.email == email]
    secrets += [t for t, v in stack.idp._refresh.items() if v.grant.email == email]
    assert len(secrets) >= 4

    with app.services.db.connect() as conn:
        tables = [r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))]
        raw = " ".join(
            str(value)
            for table in tables
            for row in conn.execute(text(f'SELECT * FROM "{table}"')).mappings()
            for value in row.values()
        )
    exported = run_cli(env, "messages", "export", "--account", str(account(app).id)).stdout
    listed = run_cli(env, "account", "list", "--json").stdout
    exported += doctor.stdout + doctor.stderr
    assert json.loads(listed)[0]["auth"] == stack.name and "hello" in exported
    slack = json.dumps([c.args for c in app.fake.calls]) + json.dumps(app.fake.home_tabs)
    # The app's logs: the test provider (in this process, threads "oauth-...") logs what it issues, as a
    # provider's own server may; that is not ours to judge.
    logs = "\n".join(r.getMessage() for r in caplog.records if not r.threadName.startswith("oauth-"))
    assert "lease taken" in logs and "access token refreshed" in logs  # the logs were captured
    # XOAUTH2 sends "user=...\x01auth=Bearer <token>" in base64: not that either.
    secrets += [
        base64.b64encode(f"user={email}\x01auth=Bearer {t}\x01\x01".encode()).decode()
        for t in secrets
        if t in stack.idp._access
    ]
    for secret in secrets:
        for where, haystack in (("database", raw), ("logs", logs), ("exports", exported + listed), ("Slack", slack)):
            assert secret not in haystack, f"a token in the {where}"
    # The access log never shows the callback's code and state, nor the connect token.
    assert redact_target("/oauth/callback?code=c0de&state=st4te") == "/oauth/callback?[redacted]"
    assert redact_target("/connect/t0ken/oauth/google") == "/connect/[token]/oauth/google"


# --------------------------------------------------------------------- disconnect gives the grant back
def test_disconnect_and_delete_my_data_revoke_the_grant(tmp_path: Path, all_stacks, stack: SignInStack) -> None:
    if stack.name == "microsoft":
        stack.idp.omit_from_discovery = ("revocation_endpoint",)  # as the real one: nothing to revoke there
    with running_app(tmp_path, stack.dovecot, **stack.settings()) as app:
        kept = mailbox(stack, "kept", ("old mail", 2 * DAY))
        account_id = signed_in_account(app, stack, kept, start="1m")
        assert tick(app, stack) == 1 and stack.idp.active_grants(kept) == 1
        stack.idp.fail("revocation", 503, times=1)  # a provider in trouble never holds the disconnect up
        app.driver.block_action(ids.A_HOME_DISCONNECT, value=str(account_id), channel_id="D0001")
        modal = app.fake.wait_for("views.open")[-1].response["view"]
        assert "forget its sign-in" in json.dumps(modal)
        app.driver.view_submission(modal["id"], {ids.B_KEEP_MAIL: {ids.A_KEEP_MAIL: "keep"}})
        gone = account(app)
        assert gone.state == "disconnected" and gone.oauth_refresh_encrypted is None
        assert len(list(export_messages(app.services.db, account_id=account_id))) == 1  # the mail is kept
        revocations = [r.status for r in stack.idp.requests if r.endpoint == "revocation"]
        if stack.name == "google":
            assert revocations == [503]  # tried once, in vain: the grant stays with the provider
            assert stack.idp.active_grants(kept) == 1
        else:
            assert revocations == [] and stack.idp.active_grants(kept) == 1  # Microsoft offers no revocation

        deleted = mailbox(stack, "deleted")
        signed_in_account(app, stack, deleted)
        app.driver.block_action(ids.A_HOME_DELETE_DATA, channel_id="D0001")
        app.fake.wait_for("chat.postMessage", predicate=lambda c: "Done:" in c.args.get("text", ""))
        assert accounts(app) == []
        assert stack.idp.active_grants(deleted) == (0 if stack.name == "google" else 1)
