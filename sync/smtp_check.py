"""Testing an SMTP login (EHLO, TLS or STARTTLS, AUTH) with failures in the engine's error classes."""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sync.deadline import current_deadline
from sync.errors import AuthFailed, ProtocolError, SyncError, Timeout, TlsFailed, Unreachable
from sync.imap_session import (
    APP_PASSWORD_HINT,
    STRICT_POLICY,
    Mechanism,
    Security,
    SslContextFactory,
    default_ssl_context,
)
from sync.outbound import OutboundPolicy, open_connection


@dataclass(frozen=True)
class SmtpLogin:
    """Where and how to log in to the outgoing server; the password (or access token) never shows in repr."""

    host: str
    port: int
    security: Security
    username: str
    password: str = field(repr=False)
    mechanism: Mechanism = "password"  # "xoauth2": the password is an OAuth access token


class _PinnedSMTP(smtplib.SMTP):
    """smtplib's client connected to addresses checked by the outbound policy (STARTTLS verifies `_host`)."""

    def __init__(self, host: str, port: int, addresses: list[str], timeout: float) -> None:
        self._addresses = addresses
        super().__init__(host, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return open_connection(self._addresses, port, timeout)


class _PinnedSMTPSSL(smtplib.SMTP_SSL):
    """smtplib's TLS client connected to checked addresses; the certificate is verified for the typed name."""

    def __init__(self, host: str, port: int, addresses: list[str], timeout: float, context: ssl.SSLContext) -> None:
        self._addresses = addresses
        self._server_name = host
        super().__init__(host, port, timeout=timeout, context=context)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = open_connection(self._addresses, port, timeout)
        return self.context.wrap_socket(sock, server_hostname=self._server_name)


def check_smtp(
    login: SmtpLogin,
    *,
    timeout: float,
    ssl_context: SslContextFactory = default_ssl_context,
    outbound: OutboundPolicy = STRICT_POLICY,
) -> None:
    """Connect, EHLO, secure the connection, AUTH; raise a SyncError explaining any failure."""
    with smtp_session(login, timeout=timeout, ssl_context=ssl_context, outbound=outbound):
        pass


@contextmanager
def smtp_session(
    login: SmtpLogin,
    *,
    timeout: float,
    ssl_context: SslContextFactory = default_ssl_context,
    outbound: OutboundPolicy = STRICT_POLICY,
) -> Iterator[smtplib.SMTP]:
    """A connected, secured and logged-in client, always closed; failures to get there become SyncErrors.

    What the caller does inside (sending) raises smtplib's own errors: only the caller knows what a
    failure there means for the recipients.
    """
    where = f"{login.host}:{login.port}"
    client: smtplib.SMTP | None = None
    try:
        try:
            addresses = outbound.resolve(login.host, login.port)
            context = ssl_context()
            if login.security == "tls":
                client = _PinnedSMTPSSL(login.host, login.port, addresses, timeout, context)
            else:
                client = _PinnedSMTP(login.host, login.port, addresses, timeout)
                client.ehlo()
                if not client.has_extn("starttls"):
                    raise TlsFailed(f"{where} does not offer STARTTLS.", "Use port 465 with TLS, or 587 with STARTTLS.")
                client.starttls(context=context)
            client.ehlo()  # again after STARTTLS: the AUTH mechanisms are only offered on the secured connection
            if login.mechanism == "xoauth2":
                if not client.has_extn("auth"):
                    raise smtplib.SMTPNotSupportedError("no AUTH")
                client.auth("XOAUTH2", _XOAuth2(login.username, login.password), initial_response_ok=True)
            else:
                client.login(login.username, login.password)
        except SyncError:
            raise
        except Exception as exc:
            raise _sync_error_for(exc, login, where) from None
        yield client
    finally:
        if client is not None:
            try:
                client.quit()
            except Exception:
                client.close()


class _XOAuth2:
    """smtplib's authobject for XOAUTH2: the token first; an empty answer to the server's error challenge."""

    def __init__(self, username: str, token: str) -> None:
        self._initial = f"user={username}\x01auth=Bearer {token}\x01\x01"

    def __repr__(self) -> str:
        return "_XOAuth2()"

    def __call__(self, challenge: bytes | None = None, /) -> str:
        # After a refusal the server sends a JSON challenge and expects an empty line (RFC 7628 3.2.3):
        # sending the token again (as imapclient does) only earns the same refusal.
        return "" if challenge is not None else self._initial


def _sync_error_for(exc: Exception, login: SmtpLogin, where: str) -> SyncError:
    """The SyncError for an SMTP failure; nothing the server said is echoed."""
    dl = current_deadline()
    if dl is not None and dl.expired:
        return Timeout(f"{where} did not finish in time (the limit is {dl.seconds:.0f} s).", "Try again later.")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        if login.mechanism == "xoauth2":
            return AuthFailed(
                f"The outgoing (SMTP) server did not accept the sign-in for {login.username}.",
                "Sign in again. For Microsoft 365, an administrator may need to turn on Authenticated SMTP "
                "for the mailbox.",
            )
        return AuthFailed("The outgoing (SMTP) server rejected the username or password.", APP_PASSWORD_HINT)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return ProtocolError(f"{where} offers no login (AUTH).", "Check the SMTP port: 465 or 587.")
    if isinstance(exc, socket.gaierror):
        return Unreachable(f"The mail server {login.host} was not found.", "Check the SMTP server name.")
    if isinstance(exc, ConnectionRefusedError):
        return Unreachable(f"Nothing answers on {where}.", "Check the port: 465 for TLS, 587 for STARTTLS.")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TlsFailed(
            f"The certificate of {login.host} is not trusted ({exc.verify_message}).",
            "Check the server name; an operator can trust a private CA with SSL_CERT_FILE.",
        )
    if isinstance(exc, ssl.SSLError):
        return TlsFailed(
            f"The secure connection to {where} failed ({exc.reason or exc.__class__.__name__}).",
            "Port 465 uses TLS, port 587 uses STARTTLS.",
        )
    if isinstance(exc, TimeoutError):
        return Timeout(f"{where} did not answer in time.", "Check the server name and port.")
    return Unreachable(
        f"{where} did not answer like an SMTP server ({exc.__class__.__name__}).",
        "Check the SMTP server name, the port and the security (465 uses TLS, 587 uses STARTTLS).",
    )
