"""The SMTP login test against a real aiosmtpd with STARTTLS and AUTH."""

from __future__ import annotations

import socket

import pytest

from sync.errors import AuthFailed, TlsFailed, Unreachable
from sync.smtp_check import SmtpLogin, check_smtp
from tests.support.network import LOOPBACK_POLICY
from tests.support.smtp import start_smtp


@pytest.fixture
def smtp(dovecot):
    server = start_smtp(dovecot.cafile, dovecot.cafile.parent / "key.pem")
    server.users["alice"] = "app-pw"
    yield server
    server.stop()


def test_good_login(smtp, dovecot):
    check_smtp(
        SmtpLogin("127.0.0.1", smtp.port, "starttls", "alice", "app-pw"),
        timeout=5,
        ssl_context=dovecot.ssl_context,
        outbound=LOOPBACK_POLICY,
    )


def test_wrong_password_is_explained(smtp, dovecot):
    with pytest.raises(AuthFailed) as info:
        check_smtp(
            SmtpLogin("127.0.0.1", smtp.port, "starttls", "alice", "nope"),
            timeout=5,
            ssl_context=dovecot.ssl_context,
            outbound=LOOPBACK_POLICY,
        )
    assert "app password" in str(info.value) and "nope" not in str(info.value)


def test_tls_on_a_starttls_port_is_explained(smtp, dovecot):
    with pytest.raises(TlsFailed) as info:
        check_smtp(
            SmtpLogin("127.0.0.1", smtp.port, "tls", "alice", "app-pw"),
            timeout=5,
            ssl_context=dovecot.ssl_context,
            outbound=LOOPBACK_POLICY,
        )
    assert "465" in str(info.value)


def test_closed_port(dovecot):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Unreachable):
        check_smtp(
            SmtpLogin("127.0.0.1", port, "starttls", "a", "b"),
            timeout=5,
            ssl_context=dovecot.ssl_context,
            outbound=LOOPBACK_POLICY,
        )
