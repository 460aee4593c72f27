"""A hostile IMAP server cannot stall a slice, a connection test or the worker, nor make memory grow.

The server is tests/support/hostile_imap.py over TLS. Where memory matters, the slice or the connection
test runs in a fresh child process (tests/support/sync_child.py) that reports how much its peak RSS grew.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from flows.accounts import AccountDraft, add_account, check_connection
from flows.export import export_messages
from models.db import session_scope
from models.tables import EmailAccount, Folder, SyncRun
from sync.engine import EngineConfig, EngineDeps, Outcome, sync_account
from sync.errors import ResponseLimitExceeded, Timeout
from sync.imap_session import ImapLogin
from tests.support.hostile_imap import HostileImapServer, Script
from tests.support.mail import RecordingNotifier
from tests.support.network import LOOPBACK_POLICY
from tests.support.sync_child import run_child

MB = 1024 * 1024
SLICE_DEADLINE = 4.0
GROWTH_LIMIT_KB = 16 * 1024  # a slice against a normal server grows the peak by about 4 MB (first-use costs)


@pytest.fixture
def server() -> Iterator[HostileImapServer]:
    """A hostile server, normal until a test gives it a script."""
    with HostileImapServer() as srv:
        yield srv


def _login(server: HostileImapServer) -> ImapLogin:
    return ImapLogin(server.host, server.port, "tls", "someone", "pw")


def _add_account(db: Engine, secrets: Any, server: HostileImapServer) -> int:
    """The account is connected while the server behaves (a past sync of a year: the FETCHes happen)."""
    draft = AccountDraft(
        team_id=f"T{uuid.uuid4().hex[:8]}", user_id="U1", email="someone@example.net", imap=_login(server), start="1y"
    )
    return add_account(db, secrets, draft, timeout=5, ssl_context=server.ssl_context, outbound=LOOPBACK_POLICY)


def _deps(db: Engine, secrets: Any, notifier: RecordingNotifier, server: HostileImapServer, **cfg: Any) -> EngineDeps:
    config = EngineConfig(
        timeout=5, progress_seconds=0, ssl_context=server.ssl_context, outbound=LOOPBACK_POLICY, **cfg
    )
    return EngineDeps(db=db, secrets=secrets, notifier=notifier, config=config, owner=f"test:{uuid.uuid4().hex[:6]}")


def _within(seconds: float, fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` in a thread; its result and duration, or fail when it is still running after ``seconds``."""
    box: list[Any] = []
    start = time.monotonic()
    thread = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return box[0], time.monotonic() - start


def _slice_in_child(db: Engine, server: HostileImapServer, account: int, **config: Any) -> dict[str, Any]:
    spec = {
        "kind": "slice",
        "cafile": str(server.cafile),
        "db": db.url.render_as_string(hide_password=False),
        "account_id": account,
        "config": {"timeout": 5, "slice_deadline_seconds": 30, **config},
    }
    return run_child(spec, timeout=60)


def test_a_dripping_server_ends_the_slice_at_its_deadline_and_keeps_what_was_committed(db, secrets, server):
    server.script = Script(messages=5)
    account = _add_account(db, secrets, server)
    notifier = RecordingNotifier()
    deps = _deps(db, secrets, notifier, server, batch_size=2, slice_deadline_seconds=SLICE_DEADLINE)
    # Batches (newest first) [5, 4], [3, 2], [1]: the first commits while the second's bodies are fetched,
    # then the server drips a byte every 0.5 s into the answer of the third header FETCH: no read times out.
    server.script = Script(messages=5, behaviour="drip", drip_at="fetch", drip_interval=0.5, after=2)

    outcome, took = _within(SLICE_DEADLINE + 5, lambda: sync_account(deps, account))

    assert outcome is Outcome.FAILED and took >= SLICE_DEADLINE - 0.5
    assert server.stats.hostile_started.is_set()
    with session_scope(db) as session:
        row = session.get(EmailAccount, account)
        assert row.state == "error" and row.last_error_code == "timeout" and row.failures == 1
        assert f"the limit is {SLICE_DEADLINE:.0f} s" in row.last_error_message
        assert row.next_sync_at > dt.datetime.now(dt.UTC)  # backoff
        assert row.lease_owner is None  # given back
        run = session.get(SyncRun, row.current_run_id)
        assert run.status == "running"  # the run goes on from its cursors
        folder = session.exec(select(Folder).where(Folder.account_id == account, Folder.name == "INBOX")).one()
        assert folder.backfill_hi == 4  # the committed batch stays committed
    assert sorted(r["subject"] for r in export_messages(db, account_id=account)) == ["hostile test 4", "hostile test 5"]
    assert notifier.kinds()[-1] == "failed"

    server.script = Script(messages=5)
    assert sync_account(deps, account) is Outcome.DONE
    subjects = sorted(r["subject"] for r in export_messages(db, account_id=account))
    assert subjects == [f"hostile test {n}" for n in range(1, 6)]
    assert notifier.kinds()[-2:] == ["completed", "recovered"]


def test_a_dripping_greeting_ends_the_slice_at_its_deadline(sqlite_db, secrets, server):
    account = _add_account(sqlite_db, secrets, server)
    deps = _deps(sqlite_db, secrets, RecordingNotifier(), server, slice_deadline_seconds=SLICE_DEADLINE)
    server.script = Script(behaviour="drip", drip_at="greeting", drip_interval=0.5)
    outcome, _took = _within(SLICE_DEADLINE + 5, lambda: sync_account(deps, account))
    assert outcome is Outcome.FAILED
    with session_scope(sqlite_db) as session:
        assert session.get(EmailAccount, account).last_error_code == "timeout"


def test_a_huge_literal_is_refused_before_it_is_read(db, secrets, server):
    account = _add_account(db, secrets, server)
    server.script = Script(behaviour="huge_literal", literal_bytes=200 * MB, claimed_size=500)

    result = _slice_in_child(db, server, account)

    assert result["exit"] == 0, result["stderr"]
    assert result["outcome"] == "failed"
    assert result["grown_kb"] < GROWTH_LIMIT_KB, result
    assert server.stats.sent_bytes < 64 * MB  # cut off at the announcement, not read to the end
    with session_scope(db) as session:
        row = session.get(EmailAccount, account)
        assert row.last_error_code == ResponseLimitExceeded.code
        assert "sent a 200 MB item, above the 27.5 MB limit" in row.last_error_message
        assert row.lease_owner is None and row.next_sync_at > dt.datetime.now(dt.UTC)
    assert list(export_messages(db, account_id=account)) == []  # nothing stored for it


@pytest.mark.parametrize(
    "line",
    [pytest.param(b"* 1 EXISTS", id="exists"), pytest.param(b"* OK " + b"z" * 200, id="long-ok")],
)
def test_a_flood_of_untagged_responses_ends_the_command(sqlite_db, secrets, server, line):
    account = _add_account(sqlite_db, secrets, server)
    server.script = Script(behaviour="untagged_flood", flood_at="fetch", flood_line=line)

    result = _slice_in_child(sqlite_db, server, account)

    assert result["exit"] == 0, result["stderr"]
    assert result["outcome"] == "failed"
    # Bounded by the response limits: 250,000 responses, or 48 MB of them (the long lines reach that).
    assert result["grown_kb"] < 56 * 1024, result
    with session_scope(sqlite_db) as session:
        row = session.get(EmailAccount, account)
        assert row.last_error_code == ResponseLimitExceeded.code
        assert "sent more than 250,000 responses or 48 MB to one command" in row.last_error_message


def test_a_connection_test_against_a_dripping_server_ends_at_its_deadline(server):
    server.script = Script(behaviour="drip", drip_at="greeting", drip_interval=0.5)
    deadline = 3.0

    def attempt() -> Exception | None:
        try:
            check_connection(
                _login(server),
                None,
                timeout=5,
                ssl_context=server.ssl_context,
                outbound=LOOPBACK_POLICY,
                deadline_seconds=deadline,
            )
        except Exception as exc:
            return exc
        return None

    error, took = _within(deadline + 2, attempt)
    assert isinstance(error, Timeout), error
    assert "did not finish in time" in str(error) and took >= deadline - 0.5


def test_a_connection_test_refuses_a_huge_folder_name(server):
    server.script = Script(behaviour="huge_literal", literal_at="list", literal_bytes=200 * MB)
    spec = {"kind": "connect", "cafile": str(server.cafile), "host": server.host, "port": server.port}
    result = run_child({**spec, "deadline_seconds": 20, "config": {"timeout": 5}}, timeout=60)
    assert result["exit"] == 0, result["stderr"]
    assert result["outcome"] == "failed" and result["code"] == ResponseLimitExceeded.code, result
    assert "sent a 200 MB item, above the 1 MB limit" in result["error"]
    assert result["grown_kb"] < GROWTH_LIMIT_KB, result
    assert server.stats.sent_bytes < 64 * MB
