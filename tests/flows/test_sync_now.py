"""`emailsync sync`'s flow: which accounts, each to completion, waiting (a while) for a sync running elsewhere."""

from __future__ import annotations

import datetime as dt

import pytest

from flows.sync_now import NoSuchAccount, accounts_to_sync, sync_now, sync_to_completion
from models import accounts as account_queries
from models.db import session_scope
from sync.engine import Outcome
from tests.support.mail import make_message


def test_each_active_account_to_completion(deps, connect, mailbox):
    mailbox.append("INBOX", make_message(subject="hello"), date=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    account_id = connect(start="1m")
    assert accounts_to_sync(deps.db) == [account_id]
    assert accounts_to_sync(deps.db, account_id) == [account_id]
    with pytest.raises(NoSuchAccount):
        accounts_to_sync(deps.db, account_id + 1000)
    [result] = list(sync_now(deps, [account_id], wait_seconds=5))
    assert result.outcome is Outcome.DONE and not result.failed and result.error is None
    assert result.state == "active"
    with session_scope(deps.db) as session:
        account_queries.get_account(session, account_id).state = "paused"  # type: ignore[union-attr]
    assert accounts_to_sync(deps.db) == []  # paused: not synced by `emailsync sync`


def test_an_account_synced_elsewhere_is_waited_for_then_reported_busy(deps, connect):
    account_id = connect()
    with session_scope(deps.db) as session:
        token = account_queries.acquire_lease(session, account_id=account_id, owner="elsewhere", ttl=60)
    assert token is not None
    naps: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        now[0] += seconds

    result = sync_to_completion(deps, account_id, wait_seconds=2, clock=lambda: now[0], sleep=sleep)
    assert result.outcome is Outcome.BUSY and result.failed
    assert len(naps) == 4  # polled every half second for the two seconds it waited
