"""Opening an IMAP connection (TLS or STARTTLS, verified, with timeouts) and translating its failures."""

from __future__ import annotations

import imaplib
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import SocketTimeout, seq_to_parenstr_upper
from imapclient.response_parser import parse_fetch_response

from models.tables import EmailAccount
from sync.deadline import current_deadline
from sync.errors import (
    AuthFailed,
    ProtocolError,
    SyncError,
    Throttled,
    Timeout,
    TlsFailed,
    Unreachable,
)
from sync.imap_limits import LimitedIMAP4, ResponseLimits
from sync.outbound import OutboundPolicy, open_connection

log = logging.getLogger(__name__)

_imaplib_log = logging.getLogger("imapclient.imaplib")

Security = Literal["tls", "starttls"]
Mechanism = Literal["password", "xoauth2"]
SslContextFactory = Callable[[], ssl.SSLContext]
STRICT_POLICY = OutboundPolicy()

APP_PASSWORD_HINT = (
    "Check the address and password. Gmail, iCloud, Yahoo, Outlook and Fastmail need an app password "
    "(not your normal one) when two-step verification is on."
)


TOKEN_REFUSED_HINT = "Reconnect and sign in again; if it keeps failing, IMAP may be turned off for this mailbox."


@dataclass(frozen=True)
class ImapLogin:
    """Where and how to log in to a mailbox; the password (or access token) never shows in repr.

    With mechanism "xoauth2" the password is an OAuth access token, and `renew`, when given, fetches a
    fresh one for a single retry after the server refused the first.
    """

    host: str
    port: int
    security: Security
    username: str
    password: str = field(repr=False)
    mechanism: Mechanism = "password"
    renew: Callable[[], str] | None = field(default=None, repr=False, compare=False)


def security_of(value: str | None) -> Security:
    """A stored security setting as the Literal type (tls unless it says starttls)."""
    return "starttls" if value == "starttls" else "tls"


def account_login(account: EmailAccount, password: str, renew: Callable[[], str] | None = None) -> ImapLogin:
    """The IMAP login of a stored account, with its decrypted password (an access token for an OAuth account)."""
    return ImapLogin(
        account.imap_host,
        account.imap_port,
        security_of(account.imap_security),
        account.username,
        password,
        mechanism="xoauth2" if account.auth_kind == "oauth" else "password",
        renew=renew,
    )


def default_ssl_context() -> ssl.SSLContext:
    """The system trust store (SSL_CERT_FILE / SSL_CERT_DIR are honoured as usual)."""
    return ssl.create_default_context()


@contextmanager
def imap_session(
    login: ImapLogin,
    *,
    timeout: float,
    ssl_context: SslContextFactory = default_ssl_context,
    outbound: OutboundPolicy = STRICT_POLICY,
    limits: ResponseLimits = ResponseLimits(),
) -> Iterator[IMAPClient]:
    """A logged-in client; every failure becomes a SyncError, and the session is always closed.

    Under a `sync.deadline.deadline()` block the connection is shut down when the deadline passes, and
    whatever failure that causes becomes a Timeout. A literal or a flood of responses above ``limits``
    ends the command with ResponseLimitExceeded.
    """
    client = open_logged_in(login, timeout=timeout, ssl_context=ssl_context, outbound=outbound, limits=limits)
    try:
        with translate_errors(login):
            yield client
    finally:
        _close(client)


def open_logged_in(
    login: ImapLogin,
    *,
    timeout: float,
    ssl_context: SslContextFactory = default_ssl_context,
    outbound: OutboundPolicy = STRICT_POLICY,
    limits: ResponseLimits = ResponseLimits(),
) -> IMAPClient:
    """A logged-in client the caller closes (`close_client`); failures become SyncErrors, as in `imap_session`.

    For callers that keep the connection beyond one block (the IDLE watcher hands its socket to a selector).
    """
    client = connect(login, timeout=timeout, ssl_context=ssl_context, outbound=outbound, limits=limits)
    try:
        try:
            with translate_errors(login):
                _log_in(client, login, login.password)
        except AuthFailed:
            if login.renew is None:
                raise
            # An access token can be refused before its stated expiry (revoked, or our clock ahead of the
            # provider's): renew it once, which also tells a revoked grant apart, then log in afresh.
            token = login.renew()
            _close(client)
            client = connect(login, timeout=timeout, ssl_context=ssl_context, outbound=outbound, limits=limits)
            with translate_errors(login):
                _log_in(client, login, token)
    except BaseException:
        _close(client)
        raise
    return client


def close_client(client: IMAPClient) -> None:
    """LOGOUT, else shut the connection down; never raises."""
    _close(client)


def _log_in(client: IMAPClient, login: ImapLogin, secret: str) -> None:
    """LOGIN with the password, or AUTHENTICATE XOAUTH2 with the access token."""
    if login.mechanism == "xoauth2":
        client.oauth2_login(login.username, secret)
    else:
        client.login(login.username, secret)


def connect(
    login: ImapLogin,
    *,
    timeout: float,
    ssl_context: SslContextFactory,
    outbound: OutboundPolicy = STRICT_POLICY,
    limits: ResponseLimits = ResponseLimits(),
) -> IMAPClient:
    """Open the connection to a checked address and read the greeting (TLS first, or STARTTLS first)."""
    with translate_errors(login):
        addresses = outbound.resolve(login.host, login.port)
        context = ssl_context()
        client = _PinnedIMAPClient(
            login.host,
            addresses,
            limits,
            port=login.port,
            ssl=login.security == "tls",
            ssl_context=context,
            timeout=SocketTimeout(connect=min(timeout, 15.0), read=timeout),
        )
        if not _imaplib_log.isEnabledFor(logging.DEBUG):
            # imapclient sets imaplib's debug level to 5, and imaplib then formats a repr of every line and
            # literal (a message body, or whatever a server sends) for a logger that drops it: CPU, and a
            # transient copy four times the size of the data.
            client._imap.debug = 0
        if login.security == "starttls":
            try:
                client.starttls(context)
            except Exception:
                _close(client)
                raise
        return client


class _PinnedIMAP4(LimitedIMAP4):
    """imaplib's connection, opened to an address checked by the outbound policy, with response limits.

    The TLS certificate is still verified for the typed host name (`self.host`), for TLS and for a
    later STARTTLS alike; the socket is registered with the current deadline before any TLS wrap.
    """

    def __init__(
        self,
        host: str,
        addresses: list[str],
        port: int,
        tls: ssl.SSLContext | None,
        timeout: float | None,
        limits: ResponseLimits,
    ) -> None:
        self._addresses = addresses
        self._tls = tls
        self.response_limits = limits
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = open_connection(self._addresses, self.port, timeout)
        if self._tls is not None:
            return self._tls.wrap_socket(sock, server_hostname=self.host)
        return sock


class _PinnedIMAPClient(IMAPClient):  # type: ignore[misc]  # imapclient ships no type hints
    """IMAPClient whose connection goes to the checked addresses only, under response limits."""

    def __init__(self, host: str, addresses: list[str], limits: ResponseLimits, **kwargs: Any) -> None:
        self._addresses = addresses
        self._limits = limits
        super().__init__(host, **kwargs)

    def _create_IMAP4(self) -> imaplib.IMAP4:
        tls = self.ssl_context if self.ssl else None
        connect_timeout = getattr(self._timeout, "connect", None)
        return _PinnedIMAP4(self.host, self._addresses, self.port, tls, connect_timeout, self._limits)


@contextmanager
def translate_errors(login: ImapLogin) -> Iterator[None]:
    """Turn socket, TLS and IMAP failures into the engine's error classes with a fix."""
    where = f"{login.host}:{login.port}"
    try:
        yield
    except SyncError:
        raise
    except Exception as exc:
        dl = current_deadline()
        if dl is not None and dl.expired:
            # The watchdog shut the connection down: whatever broke next is the deadline's doing.
            raise Timeout(
                f"{where} did not finish in time (the limit is {dl.seconds:.0f} s).",
                "The server is too slow or misbehaving right now; it is tried again later.",
            ) from None
        error = _sync_error_for(exc, login, where)
        if error is None:
            raise
        raise error from None


def _sync_error_for(exc: Exception, login: ImapLogin, where: str) -> SyncError | None:
    """The SyncError for a socket, TLS or IMAP failure (None for anything else)."""
    if isinstance(exc, socket.gaierror):
        return Unreachable(
            f"The mail server {login.host} was not found.", "Check the server name (for example imap.example.com)."
        )
    if isinstance(exc, ConnectionRefusedError):
        return Unreachable(f"Nothing answers on {where}.", "Check the port: 993 for TLS, 143 for STARTTLS.")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TlsFailed(
            f"The certificate of {login.host} is not trusted ({exc.verify_message}).",
            "Ask your mail provider for the right server name; an operator can trust a private CA with SSL_CERT_FILE.",
        )
    if isinstance(exc, ssl.SSLError):
        return TlsFailed(
            f"The secure connection to {where} failed ({exc.reason or exc.__class__.__name__}).",
            "Check the security setting: port 993 uses TLS, port 143 uses STARTTLS.",
        )
    if isinstance(exc, TimeoutError):
        return Timeout(
            f"{where} did not answer in time.",
            "Check the server name, the port and the security (993 uses TLS, 143 uses STARTTLS); "
            "the server may also be down or behind a firewall.",
        )
    if isinstance(exc, LoginError):
        return _login_error(exc, login)
    if isinstance(exc, IMAPClientError):
        text = str(exc).upper()
        if "THROTTLED" in text or "LIMIT" in text:
            return Throttled(f"{login.host} asked us to slow down.", "Sync resumes automatically.")
        # Never echo what the server said: a foreign service's banner is not ours to show.
        return ProtocolError(
            f"{where} did not answer like an IMAP server.",
            "Check the server name, the port and the security (993 uses TLS, 143 uses STARTTLS).",
        )
    if isinstance(exc, OSError | EOFError):
        return Unreachable(
            f"The connection to {where} was lost ({exc.__class__.__name__}).", "Sync retries automatically."
        )
    return None


def _login_error(exc: LoginError, login: ImapLogin) -> SyncError:
    text = str(exc).upper()
    if "THROTTLED" in text:
        return Throttled("The server is limiting logins right now.", "Sync retries automatically.")
    if "UNAVAILABLE" in text:
        return Throttled("The server is temporarily unavailable.", "Sync retries automatically.")
    if login.mechanism == "xoauth2":
        return AuthFailed(f"The mail server did not accept the sign-in for {login.username}.", TOKEN_REFUSED_HINT)
    return AuthFailed("The server rejected the username or password.", APP_PASSWORD_HINT)


def _close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception:
            log.debug("IMAP shutdown failed", exc_info=True)


def fetch_uid_range(
    client: IMAPClient, lo: int, hi: int, items: list[str], modifiers: list[str] | None = None
) -> dict[int, dict[bytes, Any]]:
    """UID FETCH lo:hi, answered for every UID in the range.

    imapclient 4.1's fetch() keeps only the ids it can enumerate from its argument, so a range string
    like "1:5000" raises; listing 5,000 UIDs instead would make a command line near Dovecot's limit.
    """
    args = ["UID", "FETCH", f"{lo}:{hi}", seq_to_parenstr_upper(items)]
    if modifiers:
        args.append(seq_to_parenstr_upper(modifiers))
    imap = client._imap
    tag = imap._command(*args)
    typ, data = imap._command_complete("FETCH", tag)
    client._checkok("fetch", typ, data)
    typ, data = imap._untagged_response(typ, data, "FETCH")
    response = parse_fetch_response(data, client.normalise_times, True)
    return {uid: fields for uid, fields in response.items() if isinstance(uid, int) and lo <= uid <= hi}
