"""IMAP and SMTP log in with XOAUTH2 for accounts signed in with Google or Microsoft."""

from __future__ import annotations

import pytest

from flows.accounts import check_connection
from sync.errors import AuthFailed
from sync.imap_session import ImapLogin, imap_session
from sync.smtp_check import SmtpLogin, check_smtp
from tests.support.network import LOOPBACK_POLICY
from tests.support.signin import SignInStack

ANN = "ann@example.com"


@pytest.fixture
def stack(stack: SignInStack) -> SignInStack:
    """This flavour's stack with Ann's mailbox in its Dovecot."""
    stack.dovecot.add_mailbox(ANN)
    return stack


def _imap(stack: SignInStack, token: str, **extra) -> ImapLogin:
    return ImapLogin("127.0.0.1", stack.dovecot.imaps_port, "tls", ANN, token, mechanism="xoauth2", **extra)


def _smtp(stack: SignInStack, token: str) -> SmtpLogin:
    return SmtpLogin("127.0.0.1", stack.smtp.port, "starttls", ANN, token, mechanism="xoauth2")


def test_imap_and_smtp_take_an_access_token(stack: SignInStack) -> None:
    tokens = stack.idp.issue_tokens(ANN)
    folders = check_connection(
        _imap(stack, tokens["access_token"]),
        _smtp(stack, tokens["access_token"]),
        timeout=10,
        ssl_context=stack.dovecot.ssl_context,
        outbound=LOOPBACK_POLICY,
    )
    assert [f.name for f in folders] == ["INBOX"]
    assert stack.smtp.token_logins[-1] == ("XOAUTH2", ANN, True)
    assert "access_token" not in repr(_imap(stack, tokens["access_token"])) + repr(_smtp(stack, "x"))
    assert tokens["access_token"] not in repr(_imap(stack, tokens["access_token"]))


def _open(login: ImapLogin, stack: SignInStack) -> None:
    with imap_session(login, timeout=10, ssl_context=stack.dovecot.ssl_context, outbound=LOOPBACK_POLICY) as client:
        client.noop()


def test_a_refused_token_is_renewed_once(stack: SignInStack) -> None:
    stale = stack.idp.issue_tokens(ANN)
    stack.idp.expire_access_tokens(ANN)
    fresh = stack.idp.issue_tokens(ANN)
    renewed: list[str] = []

    def renew() -> str:
        renewed.append("yes")
        return str(fresh["access_token"])

    login = _imap(stack, stale["access_token"], renew=renew)
    with imap_session(login, timeout=10, ssl_context=stack.dovecot.ssl_context, outbound=LOOPBACK_POLICY) as client:
        assert client.list_folders()
    assert renewed == ["yes"]
    # Without a way to renew, or when the renewed token is refused too, it is an authentication failure.
    with pytest.raises(AuthFailed, match="did not accept the sign-in"):
        _open(_imap(stack, stale["access_token"]), stack)
    with pytest.raises(AuthFailed):
        _open(_imap(stack, stale["access_token"], renew=lambda: str(stale["access_token"])), stack)


def test_smtp_refusal_answers_the_challenge_without_resending_the_token(stack: SignInStack) -> None:
    tokens = stack.idp.issue_tokens(ANN)
    stack.idp.revoke_user(ANN)
    before = len(stack.smtp.token_logins)
    with pytest.raises(AuthFailed, match=r"outgoing \(SMTP\) server did not accept the sign-in") as err:
        check_smtp(
            _smtp(stack, tokens["access_token"]),
            timeout=10,
            ssl_context=stack.dovecot.ssl_context,
            outbound=LOOPBACK_POLICY,
        )
    assert tokens["access_token"] not in str(err.value)
    assert stack.smtp.token_logins[before:] == [("XOAUTH2", ANN, False)]
