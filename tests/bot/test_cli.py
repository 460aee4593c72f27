"""The `emailsync` command line, run as a real process against Dovecot and SQLite."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading

import pytest

from tests.support.cli import cli_env, run_cli
from tests.support.mail import make_message


def add_args(mailbox, *extra: str, port: int | None = None) -> list[str]:
    return [
        "account",
        "add",
        "--team",
        "T1",
        "--user",
        "U1",
        "--email",
        f"{mailbox.user}@example.net",
        "--username",
        mailbox.user,
        "--imap-host",
        "127.0.0.1",
        "--imap-port",
        str(port or mailbox.server.imaps_port),
        "--password-stdin",
        *extra,
    ]


def test_account_add_sync_export_roundtrip(tmp_path, dovecot, mailbox):
    env = cli_env(tmp_path, dovecot)
    mailbox.create("Projects.2026")
    when = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    mailbox.append(
        "INBOX", make_message(subject="hello", sender="Client <Client@Corp.test>", cc="A <a@b.test>"), date=when
    )
    mailbox.append("Projects.2026", make_message(subject="plan"), date=when)
    (tmp_path / "contacts.csv").write_text("email,name\nclient@corp.test,Client\nnot-an-address,Bad\n")
    result = run_cli(env, "contacts", "import", str(tmp_path / "contacts.csv"), "--team", "T1")
    assert result.returncode == 2 and "contacts.csv:3:" in result.stderr and "1 added" in result.stdout
    result = run_cli(env, *add_args(mailbox, "--start", "1m", "--json"), stdin=mailbox.password + "\n")
    assert result.returncode == 0, result.stderr
    account_id = json.loads(result.stdout)["id"]
    result = run_cli(env, "sync", "--account", str(account_id))
    assert result.returncode == 0, result.stderr
    result = run_cli(env, "messages", "export", "--account", str(account_id))
    rows = sorted((json.loads(line) for line in result.stdout.splitlines()), key=lambda r: r["subject"])
    assert [r["subject"] for r in rows] == ["hello", "plan"]
    hello = rows[0]
    assert hello["from"] == ["client@corp.test"] and hello["cc"] == ["a@b.test"]
    assert hello["contacts"] == ["client@corp.test"] and hello["folders"] == ["INBOX"]
    assert hello["direction"] == "received" and hello["size"] > 0
    assert dt.datetime.fromisoformat(hello["date"])
    listed = json.loads(run_cli(env, "account", "list", "--json").stdout)
    assert listed[0]["messages"] == 2 and mailbox.password not in json.dumps(listed)
    contacts = json.loads(run_cli(env, "contacts", "list", "--team", "T1", "--json").stdout)
    assert contacts[0]["email"] == "client@corp.test"


def test_wrong_password_exits_2_and_saves_nothing(tmp_path, dovecot, mailbox):
    env = cli_env(tmp_path, dovecot)
    result = run_cli(env, *add_args(mailbox), stdin="wrong-password\n")
    assert result.returncode == 2
    assert "rejected the username or password" in result.stderr and "app password" in result.stderr
    assert "wrong-password" not in result.stderr + result.stdout
    assert json.loads(run_cli(env, "account", "list", "--json").stdout) == []


def test_unknown_folder_lists_the_folders(tmp_path, dovecot, mailbox):
    env = cli_env(tmp_path, dovecot)
    result = run_cli(env, *add_args(mailbox, "--folder", "Nope"), stdin=mailbox.password + "\n")
    assert result.returncode == 2 and "No folder named Nope" in result.stderr and "INBOX" in result.stderr


def test_closed_port(tmp_path, dovecot, mailbox):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_cli(cli_env(tmp_path, dovecot), *add_args(mailbox, port=port), stdin="pw\n")
    assert result.returncode == 2 and "Nothing answers on 127.0.0.1" in result.stderr and "993" in result.stderr


def test_untrusted_certificate(tmp_path, dovecot, mailbox):
    env = cli_env(tmp_path)  # Dovecot's self-signed CA is not trusted here
    result = run_cli(env, *add_args(mailbox), stdin=mailbox.password + "\n")
    assert result.returncode == 2 and "certificate" in result.stderr and "not trusted" in result.stderr


def test_silent_server_times_out(tmp_path, dovecot, mailbox):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    env = cli_env(tmp_path, dovecot, EMAILSYNC_IMAP_TIMEOUT="1")
    result = run_cli(env, *add_args(mailbox, port=listener.getsockname()[1]), stdin="pw\n", timeout=60)
    listener.close()
    assert result.returncode == 2 and "did not answer in time" in result.stderr


@pytest.mark.parametrize(
    ("env_extra", "needle"),
    [({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"), ({"EMAILSYNC_POLL_SECONDS": "soon"}, "EMAILSYNC_POLL_SECONDS")],
)
def test_bad_setting_names_it_in_one_line(tmp_path, env_extra, needle):
    result = run_cli(cli_env(tmp_path, **env_extra), "account", "list")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and needle in result.stderr


def test_production_without_key_refuses_and_dev_creates_one(tmp_path):
    env = cli_env(tmp_path, EMAILSYNC_ENV="production")
    env.pop("EMAILSYNC_SECRET_KEY")
    result = run_cli(env, "account", "list")
    assert result.returncode == 2 and "EMAILSYNC_SECRET_KEY" in result.stderr
    env.pop("EMAILSYNC_ENV")
    result = run_cli(env, "account", "list")
    assert result.returncode == 0 and "created one" in result.stderr
    key_file = tmp_path / "data" / "secret.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_secrets_rotate_and_doctor(tmp_path, dovecot, mailbox):
    from cryptography.fernet import Fernet

    env = cli_env(tmp_path, dovecot)
    assert run_cli(env, *add_args(mailbox), stdin=mailbox.password + "\n").returncode == 0
    new_key = Fernet.generate_key().decode()
    rotated = {**env, "EMAILSYNC_SECRET_KEY": f"{new_key},{env['EMAILSYNC_SECRET_KEY']}"}
    result = run_cli(rotated, "secrets", "rotate")
    assert result.returncode == 0 and "1 secrets re-encrypted" in result.stdout
    only_new = {**env, "EMAILSYNC_SECRET_KEY": new_key}
    result = run_cli(only_new, "doctor", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["ok"], report
    assert mailbox.password not in result.stdout
    # The old key alone can no longer read the rotated secret, and doctor says so.
    result = run_cli(env, "doctor")
    assert result.returncode == 1 and "cannot be decrypted" in result.stdout


def test_remove_keeps_or_deletes_mail(tmp_path, dovecot, mailbox):
    env = cli_env(tmp_path, dovecot)
    mailbox.append("INBOX", make_message(subject="kept"), date=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    account_id = run_cli(env, *add_args(mailbox, "--start", "1m"), stdin=mailbox.password + "\n").stdout.strip()
    assert run_cli(env, "sync").returncode == 0
    assert run_cli(env, "account", "remove", account_id).returncode == 0
    assert len(run_cli(env, "messages", "export", "--account", account_id).stdout.splitlines()) == 1
    assert run_cli(env, "account", "remove", account_id, "--delete-mail").returncode == 0
    assert run_cli(env, "messages", "export", "--account", account_id).returncode == 2
    assert run_cli(env, "account", "remove", "999").returncode == 2


def test_account_add_follows_the_outbound_policy(tmp_path, dovecot, mailbox):
    strict = cli_env(tmp_path, dovecot, EMAILSYNC_ALLOW_PRIVATE_HOSTS="", EMAILSYNC_ALLOW_PORTS="")
    result = run_cli(strict, *add_args(mailbox), stdin=mailbox.password + "\n")
    assert result.returncode == 2 and "not a mail port" in result.stderr and "EMAILSYNC_ALLOW_PORTS" in result.stderr
    ports_only = cli_env(tmp_path, dovecot, EMAILSYNC_ALLOW_PRIVATE_HOSTS="", EMAILSYNC_ALLOW_PORTS="1024-65535")
    result = run_cli(ports_only, *add_args(mailbox), stdin=mailbox.password + "\n")
    assert result.returncode == 2 and "private or local network" in result.stderr
    assert "EMAILSYNC_ALLOW_PRIVATE_HOSTS" in result.stderr and mailbox.password not in result.stderr
    assert run_cli(strict, "account", "list", "--json").stdout.strip() == "[]"
    # The operator allows the network and the port: the same command connects.
    result = run_cli(cli_env(tmp_path, dovecot), *add_args(mailbox), stdin=mailbox.password + "\n")
    assert result.returncode == 0, result.stderr
