"""The bad day: crashes, flags, deletions, moves, UIDVALIDITY, renames, mail arriving mid-sync (issue 3)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import select

from flows.export import export_messages
from models.db import session_scope
from models.tables import Folder, MessageLocation
from sync.engine import Outcome, sync_account
from tests.support.cli import cli_env, run_cli
from tests.support.mail import make_message
from tests.support.network import LOOPBACK_POLICY

WHEN = dt.datetime.now(dt.UTC) - dt.timedelta(days=5)


def stored(deps: Any, account: int) -> dict[str, dict[str, Any]]:
    return {r["message_id"]: r for r in export_messages(deps.db, account_id=account)}


def flags_of(deps: Any, account: int, folder: str) -> dict[int, str]:
    with session_scope(deps.db) as session:
        rows = session.execute(
            select(MessageLocation.uid, MessageLocation.flags)
            .join(Folder, Folder.id == MessageLocation.folder_id)
            .where(Folder.account_id == account, Folder.name == folder)
        ).all()
    return {uid: flags for uid, flags in rows}


def imap_oracle(mailbox, folders: list[str]) -> set[tuple[str, str]]:
    """(folder, Message-ID) of every message, listed directly over IMAP."""
    client = mailbox.server.client(mailbox.user, mailbox.password)
    found = set()
    try:
        for folder in folders:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            for chunk in range(0, len(uids), 500):
                resp = client.fetch(uids[chunk : chunk + 500], ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
                for data in resp.values():
                    raw = data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode()
                    found.add((folder, raw.split(":", 1)[1].strip()))
    finally:
        client.logout()
    return found


def as_pairs(rows: dict[str, dict[str, Any]]) -> set[tuple[str, str]]:
    return {(folder, mid) for mid, row in rows.items() for folder in row["folders"]}


def rawlog_commands(mailbox) -> list[str]:
    """Client commands as Dovecot's rawlog recorded them ("<time> <tag> <command> ..."), without time and tag."""
    lines = []
    for path in sorted(mailbox.server.rawlog_dir(mailbox.user).glob("*.in")):
        for line in path.read_bytes().decode(errors="replace").splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3:
                lines.append(parts[2])
    return lines


def clear_rawlog(mailbox) -> None:
    for path in mailbox.server.rawlog_dir(mailbox.user).glob("*"):
        path.unlink()


@pytest.mark.parametrize("crash_after", [1, 2, 3])
def test_crash_mid_sync_then_rerun_equals_the_mailbox(tmp_path, dovecot, mailbox, crash_after, request):
    db_url = f"sqlite:///{tmp_path / 'crash.db'}"
    if request.node.callspec.id.endswith("3"):  # one of the crash points also runs on PostgreSQL
        db_url = request.getfixturevalue("pg_database")
    # A short lease lets the rerun take over from the dead process quickly.
    env = cli_env(tmp_path, dovecot, DATABASE_URL=db_url, EMAILSYNC_LEASE_TTL="2")
    base = dt.datetime.now() - dt.timedelta(days=10)
    mailbox.server.seed_maildir(
        mailbox.user, "INBOX", [(make_message(subject=f"i{i}"), base + dt.timedelta(minutes=i)) for i in range(600)]
    )
    mailbox.server.seed_maildir(
        mailbox.user, "Archive", [(make_message(subject=f"a{i}"), base + dt.timedelta(minutes=i)) for i in range(300)]
    )
    add = run_cli(
        env, "account", "add", "--team", "Tcrash", "--user", mailbox.user, "--email", f"{mailbox.user}@example.net",
        "--username", mailbox.user, "--imap-host", "127.0.0.1", "--imap-port", str(dovecot.imaps_port),
        "--password-stdin", "--start", "1m", stdin=mailbox.password + "\n",
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    account = add.stdout.strip()
    crashed = run_cli({**env, "EMAILSYNC_TEST_EXIT_AFTER_BATCH": str(crash_after)}, "sync", "--account", account)
    assert crashed.returncode == 3, crashed.stderr  # died hard, right after committing batch N
    partial = run_cli(env, "messages", "export", "--account", account).stdout.splitlines()
    assert 0 < len(partial) < 900
    # The lease of the dead process expires; a rerun waits for it rather than syncing twice at once.
    rerun = run_cli(env, "sync", "--account", account, "--wait", "60")
    assert rerun.returncode == 0, rerun.stderr
    rows = [json.loads(line) for line in run_cli(env, "messages", "export", "--account", account).stdout.splitlines()]
    by_id = {r["message_id"]: r for r in rows}
    assert len(by_id) == len(rows) == 900
    assert as_pairs(by_id) == imap_oracle(mailbox, ["INBOX", "Archive"])


def test_no_change_sync_is_status_only_on_the_wire(mailbox, connect, run_sync, deps):
    mailbox.create("Archive")
    mailbox.append("INBOX", make_message(subject="a"), date=WHEN)
    mailbox.append("Archive", make_message(subject="b"), date=WHEN)
    account = connect(start="1m")
    run_sync(account)
    clear_rawlog(mailbox)
    run_sync(account)
    commands = [c.split(" ", 1)[0].upper() for c in rawlog_commands(mailbox)]
    assert commands.count("STATUS") == 2
    assert not {"SELECT", "EXAMINE", "FETCH", "UID"} & set(commands), commands


def test_flags_follow_the_server_with_condstore(mailbox, connect, run_sync, deps):
    uid = mailbox.append("INBOX", make_message(subject="flag me"), date=WHEN)
    account = connect(start="1m")
    run_sync(account)
    assert flags_of(deps, account, "INBOX") == {uid: ""}
    client = mailbox.server.client(mailbox.user, mailbox.password)
    client.select_folder("INBOX")
    client.add_flags([uid], [b"\\Flagged", b"\\Seen"])
    client.logout()
    run_sync(account)
    assert flags_of(deps, account, "INBOX") == {uid: "\\Flagged \\Seen"}


def test_changed_flags_are_read_one_uid_window_at_a_time(mailbox, connect, run_sync, deps):
    # One FETCH for a whole large folder could be millions of lines, past the per-command response limit.
    uids = [mailbox.append("INBOX", make_message(subject=f"m{n}"), date=WHEN) for n in range(5)]
    account = connect(start="1m")
    run_sync(account)
    client = mailbox.server.client(mailbox.user, mailbox.password)
    client.select_folder("INBOX")
    client.add_flags([uids[0], uids[4]], [b"\\Seen"])
    client.logout()
    deps.config.search_window = 2
    clear_rawlog(mailbox)
    run_sync(account)
    assert flags_of(deps, account, "INBOX") == {u: "\\Seen" if u in (uids[0], uids[4]) else "" for u in uids}
    windows = [c for c in rawlog_commands(mailbox) if "CHANGEDSINCE" in c.upper()]
    assert [c.split()[2] for c in windows] == ["1:2", "3:4", "5:5"], windows


def test_flags_follow_the_server_without_condstore(tmp_path_factory, db, secrets, notifier):
    from tests.conftest import Mailbox
    from tests.support.dovecot import start_dovecot

    server = start_dovecot(tmp_path_factory.mktemp("nocondstore"), hide_condstore=True)
    try:
        server.add_user("plain", "pw")
        box = Mailbox(server, "plain", "pw")
        uid = box.append("INBOX", make_message(subject="flag me"), date=WHEN)
        from flows.accounts import AccountDraft, add_account
        from sync.engine import EngineConfig, EngineDeps

        config = EngineConfig(timeout=10, ssl_context=server.ssl_context, flag_pass_seconds=0, outbound=LOOPBACK_POLICY)
        deps = EngineDeps(db=db, secrets=secrets, notifier=notifier, config=config, owner="t")
        draft = AccountDraft(team_id="Tnc", user_id="U", email="plain@example.net", imap=box.login, start="1m")
        account = add_account(db, secrets, draft, timeout=10, ssl_context=server.ssl_context, outbound=LOOPBACK_POLICY)
        assert sync_account(deps, account) is Outcome.DONE
        client = server.client("plain", "pw")
        assert b"CONDSTORE" not in client.capabilities()
        client.select_folder("INBOX")
        client.add_flags([uid], [b"\\Answered"])
        client.logout()
        assert sync_account(deps, account) is Outcome.DONE
        assert flags_of(deps, account, "INBOX") == {uid: "\\Answered"}
    finally:
        server.stop()


def test_expunge_and_move(mailbox, connect, run_sync, deps):
    mailbox.create("Archive")
    mailbox.create("Later")
    both = make_message(subject="in both", message_id="<both@x>")
    uid_inbox = mailbox.append("INBOX", both, date=WHEN)
    uid_archive = mailbox.append("Archive", both, date=WHEN)
    mover = mailbox.append("INBOX", make_message(subject="mover", message_id="<mover@x>"), date=WHEN)
    account = connect(start="1m")
    run_sync(account)
    assert stored(deps, account)["<both@x>"]["folders"] == ["Archive", "INBOX"]

    client = mailbox.server.client(mailbox.user, mailbox.password)
    client.select_folder("INBOX")
    client.delete_messages([uid_inbox])
    client.expunge()
    client.move([mover], "Later")
    client.logout()
    run_sync(account)
    rows = stored(deps, account)
    assert rows["<both@x>"]["folders"] == ["Archive"]
    assert rows["<mover@x>"]["folders"] == ["Later"]

    client = mailbox.server.client(mailbox.user, mailbox.password)
    client.select_folder("Archive")
    client.delete_messages([uid_archive])
    client.expunge()
    client.logout()
    run_sync(account)
    assert set(stored(deps, account)) == {"<mover@x>"}


def test_uidvalidity_change_with_uids_kept_downloads_nothing(mailbox, connect, run_sync, deps):
    for i in range(5):
        mailbox.append("INBOX", make_message(subject=f"m{i}"), date=WHEN)
    account = connect(start="1m")
    run_sync(account)
    before = stored(deps, account)
    mailbox.server.doveadm("mailbox", "update", "--uid-validity", "777", "-u", mailbox.user, "INBOX")
    clear_rawlog(mailbox)
    run_sync(account)
    after = stored(deps, account)
    assert after == before
    assert not any("BODY.PEEK[]" in c.upper() for c in rawlog_commands(mailbox))
    with session_scope(deps.db) as session:
        values = {loc.uidvalidity for loc in session.exec(select(MessageLocation)).scalars()}  # type: ignore[call-overload]
    assert 777 in values


def test_folder_recreated_and_renamed_leave_nothing_stale(mailbox, connect, run_sync, deps):
    mailbox.create("Projects")
    mailbox.create("Old name")
    mailbox.append("Projects", make_message(subject="p", message_id="<p@x>"), date=WHEN)
    mailbox.append("Old name", make_message(subject="r", message_id="<r@x>"), date=WHEN)
    account = connect(start="1m")
    run_sync(account)
    client = mailbox.server.client(mailbox.user, mailbox.password)
    client.delete_folder("Projects")
    client.create_folder("Projects")
    client.append("Projects", make_message(subject="p2", message_id="<p2@x>"), msg_time=WHEN)
    client.rename_folder("Old name", "New name")
    client.logout()
    run_sync(account)
    rows = stored(deps, account)
    assert {mid: r["folders"] for mid, r in rows.items()} == {"<p2@x>": ["Projects"], "<r@x>": ["New name"]}
    with session_scope(deps.db) as session:
        names = {f.name for f in session.exec(select(Folder).where(Folder.account_id == account)).scalars()}  # type: ignore[call-overload]
        assert "Old name" not in names


def test_mail_appended_during_a_past_sync_arrives_once(mailbox, connect, deps):
    base = dt.datetime.now() - dt.timedelta(days=3)
    mailbox.server.seed_maildir(
        mailbox.user, "INBOX", [(make_message(subject=f"old{i}"), base + dt.timedelta(seconds=i)) for i in range(400)]
    )
    account = connect(start="1m")
    deps.config.batch_size = 50
    assert sync_account(deps, account, budget_seconds=0.001) is Outcome.MORE  # one batch, then the slice ends
    mailbox.append("INBOX", make_message(subject="arrived mid-sync", message_id="<mid@x>"))
    while sync_account(deps, account, budget_seconds=0.001) is Outcome.MORE:
        pass
    rows = list(export_messages(deps.db, account_id=account))
    assert len(rows) == 401 and sum(r["message_id"] == "<mid@x>" for r in rows) == 1
    assert len({r["message_id"] for r in rows}) == 401
