"""Opening an IMAP connection (TLS or STARTTLS, verified, with timeouts) and translating its failures."""

from __future__ import annotations

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
from sync.errors import (
    AuthFailed,
    ProtocolError,
    SyncError,
    Throttled,
    Timeout,
    TlsFailed,
    Unreachable,
)

log = logging.getLogger(__name__)

Security = Literal["tls", "starttls"]
SslContextFactory = Callable[[], ssl.SSLContext]

APP_PASSWORD_HINT = (
    "Check the address and password. Gmail, iCloud, Yahoo, Outlook and Fastmail need an app password "
    "(not your normal one) when two-step verification is on."
)


@dataclass(frozen=True)
class ImapLogin:
    """Where and how to log in to a mailbox; the password never shows in repr."""

    host: str
    port: int
    security: Security
    username: str
    password: str = field(repr=False)


def security_of(value: str | None) -> Security:
    """A stored security setting as the Literal type (tls unless it says starttls)."""
    return "starttls" if value == "starttls" else "tls"


def account_login(account: EmailAccount, password: str) -> ImapLogin:
    """The IMAP login of a stored account, with its decrypted password."""
    return ImapLogin(
        account.imap_host, account.imap_port, security_of(account.imap_security), account.username, password
    )


def default_ssl_context() -> ssl.SSLContext:
    """The system trust store (SSL_CERT_FILE / SSL_CERT_DIR are honoured as usual)."""
    return ssl.create_default_context()


@contextmanager
def imap_session(
    login: ImapLogin, *, timeout: float, ssl_context: SslContextFactory = default_ssl_context
) -> Iterator[IMAPClient]:
    """A logged-in client; every failure becomes a SyncError, and the session is always closed."""
    client = connect(login, timeout=timeout, ssl_context=ssl_context)
    try:
        with translate_errors(login):
            try:
                client.login(login.username, login.password)
            except LoginError as exc:
                _raise_for_login(exc)
        with translate_errors(login):
            yield client
    finally:
        _close(client)


def connect(login: ImapLogin, *, timeout: float, ssl_context: SslContextFactory) -> IMAPClient:
    """Open the connection and read the greeting (TLS first, or STARTTLS before anything else)."""
    with translate_errors(login):
        context = ssl_context()
        client = IMAPClient(
            login.host,
            port=login.port,
            ssl=login.security == "tls",
            ssl_context=context,
            timeout=SocketTimeout(connect=min(timeout, 15.0), read=timeout),
        )
        if login.security == "starttls":
            try:
                client.starttls(context)
            except Exception:
                _close(client)
                raise
        return client


@contextmanager
def translate_errors(login: ImapLogin) -> Iterator[None]:
    """Turn socket, TLS and IMAP failures into the engine's error classes with a fix."""
    where = f"{login.host}:{login.port}"
    try:
        yield
    except SyncError:
        raise
    except socket.gaierror:
        raise Unreachable(
            f"The mail server {login.host} was not found.",
            "Check the server name (for example imap.example.com).",
        ) from None
    except ConnectionRefusedError:
        raise Unreachable(
            f"Nothing answers on {where}.",
            "Check the port: 993 for TLS, 143 for STARTTLS.",
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise TlsFailed(
            f"The certificate of {login.host} is not trusted ({exc.verify_message}).",
            "Ask your mail provider for the right server name; an operator can trust a private CA with SSL_CERT_FILE.",
        ) from None
    except ssl.SSLError as exc:
        raise TlsFailed(
            f"The secure connection to {where} failed ({exc.reason or exc.__class__.__name__}).",
            "Check the security setting: port 993 uses TLS, port 143 uses STARTTLS.",
        ) from None
    except TimeoutError:
        raise Timeout(
            f"{where} did not answer in time.",
            "Check the server name, the port and the security (993 uses TLS, 143 uses STARTTLS); "
            "the server may also be down or behind a firewall.",
        ) from None
    except LoginError as exc:
        _raise_for_login(exc)
    except IMAPClientError as exc:
        text = str(exc)
        if "THROTTLED" in text.upper() or "LIMIT" in text.upper():
            raise Throttled(f"{login.host} asked us to slow down.", "Sync resumes automatically.") from None
        raise ProtocolError(f"{login.host} answered something unexpected: {_clip(text)}", "") from None
    except (ConnectionError, OSError, EOFError) as exc:
        raise Unreachable(
            f"The connection to {where} was lost ({exc.__class__.__name__}).",
            "Sync retries automatically.",
        ) from None


def _raise_for_login(exc: LoginError) -> None:
    text = str(exc)
    if "THROTTLED" in text.upper():
        raise Throttled("The server is limiting logins right now.", "Sync retries automatically.") from None
    if "UNAVAILABLE" in text.upper():
        raise Throttled("The server is temporarily unavailable.", "Sync retries automatically.") from None
    raise AuthFailed("The server rejected the username or password.", APP_PASSWORD_HINT) from None


def _close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception:
            log.debug("IMAP shutdown failed", exc_info=True)


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


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
