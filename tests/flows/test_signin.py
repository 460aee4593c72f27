"""The sign-in flow without a web page: state, PKCE, id token, the mailbox test, storing like a password."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import text
from sqlmodel import select

from flows import setup as setup_flow
from flows import signin
from flows.setup import LinkProblem
from models.db import session_scope
from models.secrets import SecretBox
from models.tables import EmailAccount
from sync.oauth import OAuthProviders
from tests.conftest import TEST_KEY
from tests.support.network import LOOPBACK_POLICY
from tests.support.signin import SignInStack, providers_of

REDIRECT = "http://127.0.0.1:9/oauth/callback"
ANN = "ann@example.com"


@pytest.fixture
def stack(stack: SignInStack) -> SignInStack:
    """This flavour's stack with Ann's mailbox in its Dovecot."""
    stack.dovecot.add_mailbox(ANN)
    return stack


def _params(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _sign_in(db, box: SecretBox, oauth: OAuthProviders, stack: SignInStack, *, typed: str = "", email: str = ANN):
    _, token = setup_flow.start_setup(db, team_id="T1", user_id="U1")
    started = signin.start(db, box, oauth, token, stack.name, redirect_uri=REDIRECT, typed_email=typed)
    query = _params(started.authorize_url)
    assert query["code_challenge_method"] == "S256" and len(query["state"]) >= 40
    assert "code_verifier" not in started.authorize_url
    back = _params(stack.idp.approve(started.authorize_url, email=email))
    return token, started, back


def test_a_sign_in_stores_the_account_like_a_password(sqlite_db, stack: SignInStack) -> None:
    box, oauth = SecretBox([TEST_KEY]), providers_of(stack)
    token, started, back = _sign_in(sqlite_db, box, oauth, stack)
    flow = signin.resume(sqlite_db, box, back["state"], started.browser_key)
    signed_in = signin.authenticate(oauth, flow, code=back["code"])
    assert signed_in.email == ANN and not signin.needs_choice(flow, signed_in)
    state = signin.connect(
        sqlite_db,
        box,
        oauth,
        flow,
        signed_in,
        timeout=10,
        ssl_context=stack.dovecot.ssl_context,
        outbound=LOOPBACK_POLICY,
    )
    assert state.step == "tracking" and state.draft.email == ANN and [f[0] for f in state.folders] == ["INBOX"]
    with session_scope(sqlite_db) as session:
        account = session.exec(select(EmailAccount)).one()
        setup = setup_flow.load(sqlite_db, state.session_id, team_id="T1", user_id="U1")
    assert (account.auth_kind, account.oauth_provider, account.username) == ("oauth", stack.name, ANN)
    assert (account.imap_port, account.smtp_port) == (stack.dovecot.imaps_port, stack.smtp.port)
    assert box.decrypt(account.oauth_refresh_encrypted or "") and account.secret_encrypted == ""
    assert stack.idp.imap_scope in (account.oauth_scope or "")
    assert setup.account_id == account.id
    with pytest.raises(LinkProblem):  # the link is used up by the success
        setup_flow.check_link(sqlite_db, token)
    with sqlite_db.connect() as conn:
        assert conn.execute(text("SELECT oauth_flow_encrypted FROM setup_session")).scalar() is None


def test_state_is_one_time_and_bound_to_the_browser(sqlite_db, stack: SignInStack) -> None:
    box, oauth = SecretBox([TEST_KEY]), providers_of(stack)
    _, started, back = _sign_in(sqlite_db, box, oauth, stack)
    with pytest.raises(signin.SignInRefused) as refused:
        signin.resume(sqlite_db, box, back["state"] + "x", started.browser_key)  # tampered
    assert refused.value.reason == "unknown"
    with pytest.raises(signin.SignInRefused) as refused:
        signin.resume(sqlite_db, box, back["state"], "another browser")
    assert refused.value.reason == "browser"
    with pytest.raises(signin.SignInRefused) as refused:  # used up by the refused attempt: a replay fails too
        signin.resume(sqlite_db, box, back["state"], started.browser_key)
    assert refused.value.reason == "unknown"
    with session_scope(sqlite_db) as session:
        assert session.exec(select(EmailAccount)).all() == []


def test_another_address_than_typed_waits_for_the_choice(sqlite_db, stack: SignInStack) -> None:
    box, oauth = SecretBox([TEST_KEY]), providers_of(stack)
    _, started, back = _sign_in(sqlite_db, box, oauth, stack, typed="Typed@Example.com", email=ANN)
    assert _params(started.authorize_url)["login_hint"] == "typed@example.com"
    flow = signin.resume(sqlite_db, box, back["state"], started.browser_key)
    signed_in = signin.authenticate(oauth, flow, code=back["code"])
    assert signin.needs_choice(flow, signed_in)
    choice = signin.hold_for_choice(sqlite_db, box, flow, signed_in)
    assert (choice.typed, choice.signed_in, choice.can_connect) == ("typed@example.com", ANN, True)
    with session_scope(sqlite_db) as session:
        assert session.exec(select(EmailAccount)).all() == []
    with sqlite_db.connect() as conn:
        held = conn.execute(text("SELECT oauth_flow_encrypted FROM setup_session")).scalar()
    assert signed_in.tokens.access_token not in held and signed_in.tokens.refresh_token not in held
    with pytest.raises(signin.SignInRefused):  # the original state no longer works
        signin.resume(sqlite_db, box, back["state"], started.browser_key)
    chosen = signin.resume(sqlite_db, box, choice.choice_key, started.browser_key, stage="choose")
    state = signin.connect(
        sqlite_db,
        box,
        oauth,
        chosen,
        signin.chosen(chosen),
        timeout=10,
        ssl_context=stack.dovecot.ssl_context,
        outbound=LOOPBACK_POLICY,
    )
    assert state.draft.email == ANN


def test_google_and_microsoft_mailboxes_are_recognised(monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.providers as providers

    mx = {
        "workspace.example": ["aspmx.l.google.com", "alt1.aspmx.l.google.com"],
        "new-workspace.example": ["smtp.google.com"],
        "contoso.example": ["contoso-example.mail.protection.outlook.com"],
        "elsewhere.example": ["mx.elsewhere.example"],
        "tricky.example": ["aspmx.l.google.com.evil.example"],
    }
    monkeypatch.setattr(providers, "_mx_hosts", lambda domain, _lifetime: mx.get(domain, []))
    assert [providers.mail_provider(f"a@{d}") for d in ("gmail.com", "googlemail.com", "GMAIL.com")] == ["google"] * 3
    assert [providers.mail_provider(f"a@{d}") for d in ("outlook.com", "hotmail.com", "live.com")] == ["microsoft"] * 3
    assert providers.mail_provider("a@workspace.example") == "google"
    assert providers.mail_provider("a@new-workspace.example") == "google"
    assert providers.mail_provider("a@contoso.example") == "microsoft"
    assert providers.mail_provider("a@elsewhere.example") is None
    assert providers.mail_provider("a@tricky.example") is None
    assert providers.mail_provider("not an address") is None


def test_id_token_checks(stack: SignInStack) -> None:
    import time

    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from sync.oauth import IdTokenInvalid

    oauth = providers_of(stack)
    provider = oauth.get(stack.name)
    assert provider is not None
    idp = stack.idp
    now = int(time.time())
    good = {
        "iss": idp.issuer,  # Microsoft: the real tenant, where the discovery document has {tenantid}
        "aud": idp.client_id,
        "sub": "someone",
        "iat": now,
        "exp": now + 600,
        "nonce": "n1",
        "email": "Ann@Example.com",
        "email_verified": True,
        **({"tid": idp.tenant_id} if stack.name == "microsoft" else {}),
    }
    assert oauth.verify_id_token(provider, idp.sign_jwt(good), nonce="n1").email == "ann@example.com"
    for changes in (
        {"aud": "another-client"},
        {"iss": "https://evil.example"},
        {"exp": now - 3600, "iat": now - 7200},  # expired
        {"email_verified": False},
        {"email": None},
    ):
        claims = {k: v for k, v in {**good, **changes}.items() if v is not None}
        with pytest.raises(IdTokenInvalid):
            oauth.verify_id_token(provider, idp.sign_jwt(claims), nonce="n1")
    with pytest.raises(IdTokenInvalid):
        oauth.verify_id_token(provider, idp.sign_jwt(good), nonce="another nonce")
    if stack.name == "microsoft":  # another tenant's token cannot borrow this tenant's issuer
        with pytest.raises(IdTokenInvalid):
            oauth.verify_id_token(
                provider, idp.sign_jwt({**good, "tid": "0" * 8 + "-0000-0000-0000-" + "0" * 12}), nonce="n1"
            )
    forged_key = RSAKey.generate_key(2048, parameters={"kid": "forged"}, private=True)
    forged = jwt.encode({"alg": "RS256", "kid": "forged"}, good, forged_key)
    with pytest.raises(IdTokenInvalid):
        oauth.verify_id_token(provider, forged, nonce="n1")
