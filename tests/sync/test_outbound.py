"""The outbound policy: typed server names never reach private networks or non-mail ports, and nothing
a foreign server says is echoed back; against real sockets, Dovecot and aiosmtpd."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from flows.accounts import check_connection
from models.db import session_scope
from models.tables import EmailAccount
from sync.errors import ProtocolError, Timeout, TlsFailed, Unreachable
from sync.imap_session import ImapLogin
from sync.outbound import HostRefused, OutboundPolicy, is_public
from sync.smtp_check import SmtpLogin, check_smtp
from tests.support.drip import dripping_server
from tests.support.network import LOOPBACK_POLICY

STRICT = OutboundPolicy()


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "2130706433",  # 127.0.0.1 as one number
        "2130706434",
        "0x7f.1",
        "127.1",
        "::1",
        "[::1]",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 around 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",  # CGNAT
        "169.254.169.254",  # cloud metadata
        "fd00:ec2::254",  # AWS metadata over IPv6 (unique local)
        "fe80::1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "ff02::1",
    ],
)
def test_private_local_and_odd_spellings_are_refused(host):
    with pytest.raises(HostRefused) as info:
        STRICT.resolve(host, 993)
    assert "EMAILSYNC_ALLOW_PRIVATE_HOSTS" in info.value.fix


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert is_public(ipaddress.ip_address(address))
    assert [ipaddress.ip_address(a) for a in STRICT.resolve(address, 993)] == [ipaddress.ip_address(address)]


@pytest.mark.parametrize("port", [22, 80, 443, 4222, 5432, 6379, 8080])
def test_only_mail_ports_unless_allowed(port):
    with pytest.raises(HostRefused) as info:
        STRICT.resolve("8.8.8.8", port)
    assert "EMAILSYNC_ALLOW_PORTS" in info.value.fix
    assert OutboundPolicy.parse(ports=f"{port}").resolve("8.8.8.8", port) == ["8.8.8.8"]
    for mail_port in (143, 993, 465, 587):
        assert STRICT.resolve("8.8.8.8", mail_port) == ["8.8.8.8"]


def test_the_operator_allows_a_network_not_more():
    policy = OutboundPolicy.parse("10.0.0.0/8")
    assert policy.resolve("10.9.8.7", 993) == ["10.9.8.7"]
    with pytest.raises(HostRefused):
        policy.resolve("192.168.0.1", 993)
    with pytest.raises(HostRefused):
        policy.resolve("127.0.0.1", 993)


def test_names_that_are_not_host_names_are_refused_before_any_lookup():
    for bad in ("imap.example.com/evil", "a b.com", "", "-x.com", "x" * 300, "imap.example.com:993"):
        with pytest.raises(Unreachable):
            STRICT.resolve(bad, 993)


@pytest.mark.parametrize("text", ["10.0.0.0/33", "nonsense", "1.2.3.4/8/9"])
def test_bad_allow_lists_are_rejected(text):
    with pytest.raises(ValueError):
        OutboundPolicy.parse(text)
    with pytest.raises(ValueError):
        OutboundPolicy.parse(ports="0-70000")


@pytest.fixture
def listener() -> Iterator[tuple[int, list[socket.socket]]]:
    """A loopback port that records every connection it gets (and says nothing)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1], accepted
    stop.set()
    server.close()
    for conn in accepted:
        conn.close()


def test_a_refused_host_is_never_connected_to(listener):
    port, accepted = listener
    policy = OutboundPolicy.parse(ports=str(port))  # the port is allowed, the address is not
    for host in ("127.0.0.1", "2130706433", "localhost"):
        with pytest.raises(HostRefused):
            check_connection(ImapLogin(host, port, "tls", "u", "p"), None, timeout=2, outbound=policy)
        with pytest.raises(HostRefused):
            check_smtp(SmtpLogin(host, port, "starttls", "u", "p"), timeout=2, outbound=policy)
    time.sleep(0.3)
    assert accepted == []


@pytest.fixture
def banner_service() -> Iterator[int]:
    """A foreign service on loopback that greets like NATS, with details an attacker would want."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    banner = b'INFO {"server_id":"NDSECRETID","version":"2.10.7","go":"go1.21","max_payload":1048576}\r\n'

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            try:
                conn.sendall(banner)
                conn.recv(1024)
            except OSError:
                pass
            finally:
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_a_foreign_banner_is_never_echoed(banner_service, dovecot):
    imap = ImapLogin("127.0.0.1", banner_service, "starttls", "u", "p")
    with pytest.raises(ProtocolError) as info:
        check_connection(imap, None, timeout=3, ssl_context=dovecot.ssl_context, outbound=LOOPBACK_POLICY)
    smtp = SmtpLogin("127.0.0.1", banner_service, "starttls", "u", "p")
    with pytest.raises(Unreachable) as smtp_info:
        check_smtp(smtp, timeout=3, ssl_context=dovecot.ssl_context, outbound=LOOPBACK_POLICY)
    for error in (info.value, smtp_info.value):
        text = f"{error.message} {error.fix}"
        assert "NDSECRETID" not in text and "INFO" not in text and "version" not in text
        assert "did not answer like" in text


def test_the_connection_goes_to_the_checked_address_and_the_certificate_is_checked_for_the_typed_name(dovecot, mailbox):
    # "localhost" is in the test certificate: resolved once, connected by address, verified by name.
    login = ImapLogin("localhost", dovecot.imaps_port, "tls", mailbox.user, mailbox.password)
    folders = check_connection(login, None, timeout=5, ssl_context=dovecot.ssl_context, outbound=LOOPBACK_POLICY)
    assert "INBOX" in [f.name for f in folders]
    # The same address spelled as a number is not a name the certificate holds: TLS fails, as it should.
    numeric = ImapLogin("2130706433", dovecot.imaps_port, "tls", mailbox.user, mailbox.password)
    with pytest.raises(TlsFailed):
        check_connection(numeric, None, timeout=5, ssl_context=dovecot.ssl_context, outbound=LOOPBACK_POLICY)


def test_a_dripping_server_cannot_hold_a_connection_test_past_its_deadline():
    with dripping_server(interval=0.5) as port:  # well inside the 2 s read timeout: only the deadline stops it
        login = ImapLogin("127.0.0.1", port, "starttls", "u", "p")
        started = time.monotonic()
        with pytest.raises(Timeout) as info:
            check_connection(login, None, timeout=2, outbound=LOOPBACK_POLICY, deadline_seconds=2)
    assert time.monotonic() - started < 6
    assert "did not finish in time" in info.value.message


def test_a_sync_refuses_a_stored_host_that_now_points_inward(deps, connect, run_sync):
    # Connected while allowed; then the operator narrows the policy (or DNS moved the name inward).
    account_id = connect()
    deps.config.outbound = OutboundPolicy.parse(ports="1024-65535")
    assert run_sync(account_id).value == "failed"
    with session_scope(deps.db, readonly=True) as session:
        account = session.get(EmailAccount, account_id)
        assert account.last_error_code == "refused" and account.state == "error"
        assert "private or local network" in account.last_error_message
