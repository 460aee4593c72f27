"""Connection tests from a connect link: failures are limited per link, person and server, and a link is
used up atomically (two submits at once give one account), on SQLite and PostgreSQL against Dovecot."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import pytest
from sqlmodel import select

from flows import setup as setup_flow
from flows.connect_limits import AttemptLimits, TooManyAttempts
from flows.setup import ConnectForm, LinkProblem
from models.db import session_scope
from models.tables import ConnectFailure, EmailAccount
from sync.errors import AuthFailed
from tests.support.network import LOOPBACK_POLICY

LIMITS = AttemptLimits(per_link=3, per_person=5, per_host=8, window=dt.timedelta(minutes=15))


def form_for(mailbox, password: str | None = None) -> ConnectForm:
    return ConnectForm(
        email=f"{mailbox.user}@example.net",
        password=password or mailbox.password,
        imap_host="127.0.0.1",
        imap_port=mailbox.server.imaps_port,
        imap_security="tls",
        username=mailbox.user,
    )


def attempt(db, secrets, mailbox, token: str, password: str | None = None, **kwargs):
    return setup_flow.connect(
        db,
        secrets,
        token,
        form_for(mailbox, password),
        timeout=10,
        ssl_context=mailbox.server.ssl_context,
        outbound=LOOPBACK_POLICY,
        limits=kwargs.pop("limits", LIMITS),
        **kwargs,
    )


def test_a_link_is_used_up_by_repeated_failures_and_says_why(db, secrets, mailbox, caplog):
    _, token = setup_flow.start_setup(db, team_id="T1", user_id="U1")
    caplog.set_level(logging.INFO)
    for _ in range(LIMITS.per_link - 1):
        with pytest.raises(AuthFailed):
            attempt(db, secrets, mailbox, token, password="guess")
    with pytest.raises(LinkProblem) as info:
        attempt(db, secrets, mailbox, token, password="guess")
    assert info.value.reason == "locked"
    # The right password does not get through a locked link, and the page says why.
    with pytest.raises(LinkProblem) as info:
        attempt(db, secrets, mailbox, token)
    assert info.value.reason == "locked"
    with pytest.raises(LinkProblem):
        setup_flow.check_link(db, token)
    assert "guess" not in caplog.text and mailbox.password not in caplog.text
    assert "connect attempt failed" in caplog.text and "code=auth_failed" in caplog.text


def test_a_person_is_limited_across_links_and_a_typo_costs_nothing(db, secrets, mailbox):
    _, first = setup_flow.start_setup(db, team_id="T1", user_id="U1")
    with pytest.raises(AuthFailed):
        attempt(db, secrets, mailbox, first, password="typo")
    assert attempt(db, secrets, mailbox, first).account_id is not None  # one typo: the link still worked
    failures = 1
    while failures < LIMITS.per_person:
        _, token = setup_flow.start_setup(db, team_id="T1", user_id="U1")
        with pytest.raises(AuthFailed):
            attempt(db, secrets, mailbox, token, password="guess")
        failures += 1
    _, fresh = setup_flow.start_setup(db, team_id="T1", user_id="U1")
    with pytest.raises(TooManyAttempts) as info:
        attempt(db, secrets, mailbox, fresh)
    assert "Try again in" in info.value.message
    # Someone else in the team is not held back by U1's failures (the server limit is higher).
    _, other = setup_flow.start_setup(db, team_id="T1", user_id="U2")
    with pytest.raises(AuthFailed):
        attempt(db, secrets, mailbox, other, password="guess")


def test_a_server_is_limited_across_people(db, secrets, mailbox):
    for n in range(LIMITS.per_host):
        _, token = setup_flow.start_setup(db, team_id="T1", user_id=f"U{n}")
        with pytest.raises(AuthFailed):
            attempt(db, secrets, mailbox, token, password="guess")
    _, token = setup_flow.start_setup(db, team_id="T1", user_id="Unew")
    with pytest.raises(TooManyAttempts) as info:
        attempt(db, secrets, mailbox, token)
    assert "127.0.0.1" in info.value.message
    with session_scope(db) as session:
        rows = session.exec(select(ConnectFailure)).all()
    assert len(rows) == LIMITS.per_host and {r.code for r in rows} == {"auth_failed"}


def test_old_failures_no_longer_count(db, secrets, mailbox):
    short = AttemptLimits(per_link=10, per_person=1, per_host=10, window=dt.timedelta(seconds=1))
    _, token = setup_flow.start_setup(db, team_id="T1", user_id="U1")
    with pytest.raises(AuthFailed):
        attempt(db, secrets, mailbox, token, password="guess", limits=short)
    with pytest.raises(TooManyAttempts):
        attempt(db, secrets, mailbox, token, limits=short)
    threading.Event().wait(1.2)
    assert attempt(db, secrets, mailbox, token, limits=short).account_id is not None


def race(db, secrets, mailbox, token: str) -> list[object]:
    """Two connection tests of one link started together, so both reach the write together."""
    start = threading.Barrier(2)

    def context():
        start.wait(timeout=10)
        return mailbox.server.ssl_context()

    results: list[object] = []

    def submit() -> None:
        try:
            state = setup_flow.connect(
                db, secrets, token, form_for(mailbox), timeout=10, ssl_context=context, outbound=LOOPBACK_POLICY
            )
            results.append(state.account_id)
        except LinkProblem as exc:
            results.append(exc.reason)

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_two_submits_of_one_link_at_once_give_one_account(db, secrets, mailbox):
    for n in range(3):
        _, token = setup_flow.start_setup(db, team_id="T1", user_id=f"U{n}")
        results = race(db, secrets, mailbox, token)
        assert sorted(map(str, results)).count("used") == 1, results
    with session_scope(db) as session:
        accounts = session.exec(select(EmailAccount)).all()
    assert len(accounts) == 3  # one per link, never two
