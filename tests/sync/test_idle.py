"""The IDLE watcher against a real Dovecot, on SQLite and PostgreSQL: triggers, re-IDLE, reconnects, leases, no IDLE."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from flows.accounts import AccountDraft, add_account
from models import idle_watches
from models.db import session_scope
from models.tables import EmailAccount
from sync.engine import EngineDeps, Outcome, sync_account
from sync.idle import IdleWatcher
from sync.imap_session import ImapLogin
from tests.conftest import Mailbox
from tests.support.hostile_imap import HostileImapServer, Script
from tests.support.mail import make_message
from tests.support.network import LOOPBACK_POLICY


def wait_for(check: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    until = time.monotonic() + timeout
    while not check():
        if time.monotonic() > until:
            raise AssertionError(f"{what}: not met within {timeout:.0f} s")
        time.sleep(0.05)


class Triggers:
    """A trigger that records account ids (thread-safe)."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, account_id: int) -> None:
        with self.lock:
            self.ids.append(account_id)

    def count(self, account_id: int) -> int:
        with self.lock:
            return self.ids.count(account_id)


@contextmanager
def watching(deps: EngineDeps, trigger: Callable[[int], None], **options: float) -> Iterator[IdleWatcher]:
    watcher = IdleWatcher(deps, trigger, **{"idle_seconds": 1500.0, "lease_ttl": 6.0, **options})  # type: ignore[arg-type]
    watcher.start()
    try:
        yield watcher
    finally:
        watcher.stop()


def idle_lines(mailbox: Mailbox) -> int:
    """IDLE commands Dovecot received from this user (its rawlog of what clients sent: "<time> <tag> IDLE")."""
    total = 0
    for path in mailbox.server.rawlog_dir(mailbox.user).glob("*.in"):
        total += sum(1 for line in path.read_bytes().splitlines() if line.split()[2:3] == [b"IDLE"])
    return total


def test_a_delivery_triggers_and_idle_is_reissued(deps, connect, mailbox, run_sync):
    account = connect()
    run_sync(account)
    triggers = Triggers()
    with watching(deps, triggers, idle_seconds=2) as watcher:
        wait_for(lambda: watcher.states().get(account) == "idling", what="the watch idles")
        assert triggers.count(account) == 0  # a first watch of a fresh account: no catch-up sync
        mailbox.append("INBOX", make_message(subject="now"))
        wait_for(lambda: triggers.count(account) >= 1, timeout=10, what="a trigger after delivery")
        # IDLE re-issued every 2 s: Dovecot sees the commands, and the watch still reports changes after.
        before = idle_lines(mailbox)
        wait_for(lambda: idle_lines(mailbox) >= before + 2, timeout=20, what="IDLE re-issued")
        seen = triggers.count(account)
        mailbox.append("INBOX", make_message(subject="later"))
        wait_for(lambda: triggers.count(account) > seen, timeout=10, what="a trigger after re-IDLE")
        assert watcher.stats.drops == 0, watcher.stats.reasons


def test_a_cut_connection_comes_back_and_still_triggers(deps, connect, mailbox, run_sync, dovecot):
    account = connect()
    run_sync(account)
    triggers = Triggers()
    with watching(deps, triggers) as watcher:
        wait_for(lambda: watcher.states().get(account) == "idling", what="the watch idles")
        dovecot.doveadm("kick", mailbox.user)  # Dovecot ends the user's IMAP sessions
        wait_for(lambda: watcher.stats.drops >= 1, what="the drop is noticed")
        # Back after the backoff (2.5 to 5 s), with one catch-up sync for what came meanwhile.
        wait_for(lambda: watcher.states().get(account) == "idling" and watcher.stats.connects >= 2, what="back")
        wait_for(lambda: triggers.count(account) >= 1, timeout=10, what="the catch-up sync")
        seen = triggers.count(account)
        mailbox.append("INBOX", make_message(subject="after the cut"))
        wait_for(lambda: triggers.count(account) > seen, timeout=10, what="a trigger after the reconnect")


def test_leases_one_owner_and_accounts_that_leave(deps, connect, mailbox, run_sync):
    account = connect()
    run_sync(account)
    first, second = Triggers(), Triggers()
    with watching(deps, first, lease_ttl=3.0) as one:
        wait_for(lambda: one.states().get(account) == "idling", what="the first watcher idles")
        with watching(deps, second, lease_ttl=3.0) as two:
            time.sleep(3.5)  # several reconciles of the second: the lease is held and renewed by the first
            assert two.states() == {}
            with session_scope(deps.db) as session:
                assert idle_watches.holders(session)[account][0] == one.owner
            # A paused account leaves: the watch is released and no one takes it.
            with session_scope(deps.db) as session:
                session.get(EmailAccount, account).state = "paused"
            wait_for(lambda: account not in one.states(), what="the paused account's watch released")
            time.sleep(2)
            assert two.states() == {}
            with session_scope(deps.db) as session:
                assert idle_watches.holders(session)[account][0] is None
            # Back to active: one of the two watches it, only one.
            with session_scope(deps.db) as session:
                session.get(EmailAccount, account).state = "active"
            wait_for(lambda: account in one.states() or account in two.states(), what="watched again")
            time.sleep(2)
            assert (account in one.states()) != (account in two.states())
        # Stopping gives the leases back at once.
    with session_scope(deps.db) as session:
        assert all(owner is None for owner, _ in idle_watches.holders(session).values())


def test_a_stopped_watcher_s_watch_moves_when_its_lease_expires(deps, connect, mailbox, run_sync):
    account = connect()
    run_sync(account)
    frozen = IdleWatcher(deps, Triggers(), lease_ttl=2.0)
    with session_scope(deps.db) as session:
        idle_watches.add_missing_rows(session)
        assert [t.account_id for t in idle_watches.claim(session, owner=frozen.owner, ttl=2.0, limit=10)] == [account]
    # The owner never renews (it died): another watcher takes over once the lease has expired, and
    # as the watch was someone else's before, it catches up with a sync once it idles.
    triggers = Triggers()
    with watching(deps, triggers, lease_ttl=2.0) as watcher:
        wait_for(lambda: watcher.states().get(account) == "idling", what="taken over")
        wait_for(lambda: triggers.count(account) == 1, timeout=10, what="catch-up sync")
        with session_scope(deps.db) as session:
            assert idle_watches.renew(session, owner=frozen.owner, account_ids=[account], ttl=2.0) == set()


def test_a_refused_login_stops_the_watch_and_the_engine_reports_it(deps, connect, mailbox, run_sync, dovecot, notifier):
    account = connect()
    run_sync(account)

    def sync_now(account_id: int) -> None:
        sync_account(deps, account_id)

    with watching(deps, sync_now) as watcher:
        wait_for(lambda: watcher.states().get(account) == "idling", what="the watch idles")
        dovecot.set_password(mailbox.user, "changed-elsewhere")
        dovecot.doveadm("kick", mailbox.user)
        # The watch's next login is refused: it triggers one sync, the engine marks the account needs_reauth
        # (and tells the person, once), and the watch is released.
        wait_for(lambda: account not in watcher.states(), what="the watch released")
        logins_tried = watcher.stats.connects
        time.sleep(4)
        assert watcher.stats.connects == logins_tried  # no retry storm against the login
    with session_scope(deps.db) as session:
        assert session.get(EmailAccount, account).state == "needs_reauth"


def test_no_watch_where_the_server_has_no_idle(deps, tmp_path, secrets):
    with HostileImapServer(workdir=tmp_path / "tls") as server:
        deps.config.ssl_context = server.ssl_context
        login = ImapLogin(server.host, server.port, "tls", "someone", "pw")
        draft = AccountDraft(team_id="T", user_id="U", email="someone@example.net", imap=login)
        account = add_account(
            deps.db, secrets, draft, timeout=10, ssl_context=server.ssl_context, outbound=LOOPBACK_POLICY
        )
        assert sync_account(deps, account) is Outcome.DONE
        triggers = Triggers()
        with watching(deps, triggers) as watcher:
            wait_for(lambda: watcher.states().get(account) == "no_idle", what="the server is found without IDLE")
            time.sleep(2)
            assert watcher.states()[account] == "no_idle"
            assert watcher.stats.connects == 1  # asked once; again only after an hour
            assert watcher.idle_commands == 0
            assert triggers.ids == []


@pytest.mark.parametrize("count", [40])
def test_many_watches_share_one_loop(deps, dovecot, secrets, run_sync, count):
    """Forty accounts, one selector thread: every watch idles, and a delivery to any one triggers only it."""
    accounts: dict[int, Mailbox] = {}
    for n in range(count):
        user = f"many{n}_{time.monotonic_ns() % 10**8}"
        dovecot.add_user(user, "pw")
        box = Mailbox(dovecot, user, "pw")
        draft = AccountDraft(team_id="T", user_id=f"U{n}", email=f"{user}@example.net", imap=box.login)
        accounts[
            add_account(deps.db, secrets, draft, timeout=10, ssl_context=dovecot.ssl_context, outbound=LOOPBACK_POLICY)
        ] = box
    triggers = Triggers()
    before = {t.name for t in threading.enumerate()}
    with watching(deps, triggers) as watcher:
        wait_for(lambda: sum(s == "idling" for s in watcher.states().values()) == count, what="all idle")
        threads = {t.name for t in threading.enumerate()} - before
        assert len([t for t in threads if t.startswith("idle-loop")]) == 1
        assert len(threads) <= 8, threads  # loop, manager, trigger and the login pool: not a thread per watch
        target = sorted(accounts)[count // 2]
        accounts[target].append("INBOX", make_message(subject="only this one"))
        wait_for(lambda: triggers.count(target) == 1, timeout=10, what="the trigger")
        time.sleep(1.5)
        assert triggers.ids == [target]


def test_a_server_that_drips_its_greeting_holds_up_no_other_watch(deps, connect, mailbox, run_sync, tmp_path, secrets):
    account = connect()
    run_sync(account)
    with HostileImapServer(workdir=tmp_path / "tls") as server:
        login = ImapLogin(server.host, server.port, "tls", "slow", "pw")
        draft = AccountDraft(team_id="T", user_id="U9", email="slow@example.net", imap=login)
        slow = add_account(
            deps.db, secrets, draft, timeout=10, ssl_context=server.ssl_context, outbound=LOOPBACK_POLICY
        )
        both = deps.config.ssl_context()
        both.load_verify_locations(cafile=str(server.cafile))
        deps.config.ssl_context = lambda: both  # Dovecot's CA and the hostile server's
        # From now on every connection gets its greeting one byte a second: no read timeout ever trips.
        server.script = Script(behaviour="drip", drip_at="greeting", drip_interval=1.0)
        triggers = Triggers()
        with watching(deps, triggers) as watcher:
            wait_for(lambda: watcher.states().get(account) == "idling", what="the good watch idles")
            assert watcher.states()[slow] == "connecting"
            mailbox.append("INBOX", make_message(subject="not held up"))
            wait_for(lambda: triggers.count(account) == 1, timeout=10, what="the trigger")
            assert watcher.states()[slow] == "connecting"
            started = time.monotonic()
        # Stopping cuts the login that is still dripping.
        assert time.monotonic() - started < 10
