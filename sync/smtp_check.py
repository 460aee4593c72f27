"""Testing an SMTP login (EHLO, TLS or STARTTLS, AUTH) with failures in the engine's error classes."""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass, field

from sync.errors import AuthFailed, ProtocolError, SyncError, Timeout, TlsFailed, Unreachable
from sync.imap_session import APP_PASSWORD_HINT, Security, SslContextFactory, default_ssl_context


@dataclass(frozen=True)
class SmtpLogin:
    """Where and how to log in to the outgoing server; the password never shows in repr."""

    host: str
    port: int
    security: Security
    username: str
    password: str = field(repr=False)


def check_smtp(login: SmtpLogin, *, timeout: float, ssl_context: SslContextFactory = default_ssl_context) -> None:
    """Connect, EHLO, secure the connection, AUTH; raise a SyncError explaining any failure."""
    where = f"{login.host}:{login.port}"
    client: smtplib.SMTP | None = None
    try:
        context = ssl_context()
        if login.security == "tls":
            client = smtplib.SMTP_SSL(login.host, login.port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(login.host, login.port, timeout=timeout)
            client.ehlo()
            if not client.has_extn("starttls"):
                raise TlsFailed(f"{where} does not offer STARTTLS.", "Use port 465 with TLS, or 587 with STARTTLS.")
            client.starttls(context=context)
        client.ehlo()
        client.login(login.username, login.password)
    except SyncError:
        raise
    except smtplib.SMTPAuthenticationError:
        raise AuthFailed("The outgoing (SMTP) server rejected the username or password.", APP_PASSWORD_HINT) from None
    except smtplib.SMTPNotSupportedError:
        raise ProtocolError(f"{where} offers no login (AUTH).", "Check the SMTP port: 465 or 587.") from None
    except socket.gaierror:
        raise Unreachable(f"The mail server {login.host} was not found.", "Check the SMTP server name.") from None
    except ConnectionRefusedError:
        raise Unreachable(f"Nothing answers on {where}.", "Check the port: 465 for TLS, 587 for STARTTLS.") from None
    except ssl.SSLCertVerificationError as exc:
        raise TlsFailed(
            f"The certificate of {login.host} is not trusted ({exc.verify_message}).",
            "Check the server name; an operator can trust a private CA with SSL_CERT_FILE.",
        ) from None
    except ssl.SSLError as exc:
        raise TlsFailed(
            f"The secure connection to {where} failed ({exc.reason or exc.__class__.__name__}).",
            "Port 465 uses TLS, port 587 uses STARTTLS.",
        ) from None
    except TimeoutError:
        raise Timeout(f"{where} did not answer in time.", "Check the server name and port.") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise Unreachable(f"The SMTP conversation with {where} failed ({exc.__class__.__name__}).", "") from None
    finally:
        if client is not None:
            try:
                client.quit()
            except Exception:
                client.close()
