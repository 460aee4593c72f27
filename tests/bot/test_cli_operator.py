"""What an operator sees from the real `emailsync` process: help, quiet logs, empty results, database errors."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from tests.conftest import PG_ADMIN_URL
from tests.support.cli import cli_env, run_cli

COMMANDS = [
    ["sync"],
    ["worker"],
    ["serve"],
    ["doctor"],
    ["account", "add"],
    ["account", "list"],
    ["account", "remove"],
    ["contacts", "import"],
    ["contacts", "list"],
    ["messages", "export"],
    ["secrets", "rotate"],
    ["db", "upgrade"],
    ["team", "erase"],
]


def test_help_describes_every_command(tmp_path):
    env = cli_env(tmp_path)
    top = run_cli(env, "--help")
    assert top.returncode == 0 and "Slack later" not in top.stdout and "--verbose" in top.stdout
    for command in COMMANDS:
        result = run_cli(env, *command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        summary = result.stdout.split("\n\n")[1].strip()  # the paragraph after "Usage: ..."
        assert len(summary) > 20 and not summary.startswith("Options"), (command, result.stdout)


def test_help_loads_no_heavy_library():
    # --help must stay fast: these cost about a second together and only commands that need them load them.
    code = (
        "import sys; from bot import cli\n"
        "try:\n    cli.app(['--help'], prog_name='emailsync')\nexcept SystemExit:\n    pass\n"
        "heavy = ('sqlalchemy', 'sqlmodel', 'alembic', 'slack_bolt', 'slack_sdk', 'imapclient',\n"
        "         'cryptography', 'rich')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == ""


def test_empty_results_say_so_and_logs_are_quiet(tmp_path):
    env = cli_env(tmp_path)
    result = run_cli(env, "account", "list")
    assert result.returncode == 0 and "no accounts yet" in result.stdout
    assert "alembic" not in result.stderr and result.stderr == ""  # the first run migrates, quietly
    result = run_cli(env, "sync")
    assert result.returncode == 0 and "nothing to sync" in result.stdout and result.stderr == ""
    result = run_cli(env, "contacts", "list", "--team", "T1")
    assert result.returncode == 0 and "no contacts yet" in result.stdout
    assert run_cli(env, "account", "list", "--json").stdout.strip() == "[]"  # JSON stays JSON


def test_verbose_shows_the_libraries_info_lines(tmp_path):
    result = run_cli(cli_env(tmp_path), "--verbose", "sync")  # a new database: Alembic migrates it
    assert result.returncode == 0 and "alembic" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg(user: str = "postgres", database: str = "postgres", port: int = 5432) -> str:
    host = PG_ADMIN_URL.split("@", 1)[1].split("/", 1)[0].split(":")[0]
    return f"postgresql://{user}@{host}:{port}/{database}"


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("url", "cause"),
    [
        (lambda: _pg(port=_free_port()), "refused the connection"),
        (lambda: _pg(user="emailsync_cli_no_such_role"), 'no role "emailsync_cli_no_such_role"'),
        (lambda: _pg(database="emailsync_cli_no_such_db"), 'no database "emailsync_cli_no_such_db"'),
    ],
    ids=["refused", "no-role", "no-database"],
)
def test_an_unusable_postgresql_is_one_line_and_exit_1(tmp_path, url, cause):
    env = cli_env(tmp_path, DATABASE_URL=url())
    for command in (["account", "list"], ["sync"], ["contacts", "list", "--team", "T1"], ["db", "upgrade"]):
        result = run_cli(env, *command)
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr.count("\n") == 1 and cause in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr
    result = run_cli(env, "doctor")
    assert result.returncode == 1 and "FAIL database: " in result.stdout and cause in result.stdout


def test_a_database_server_that_stays_silent_times_out_in_one_line(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    held = []  # accepted and never answered, as a black-holed server
    threading.Thread(target=lambda: held.append(listener.accept()), daemon=True).start()
    env = cli_env(tmp_path, DATABASE_URL=f"postgresql://postgres@127.0.0.1:{listener.getsockname()[1]}/x")
    result = run_cli(env, "account", "list", timeout=120)
    listener.close()
    assert result.returncode == 1 and "did not answer in time" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
