"""Sending mail through an account's SMTP server (one login, one transaction per envelope) and the Sent copy."""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from dataclasses import dataclass

from sync.errors import SyncError
from sync.imap_session import STRICT_POLICY, ImapLogin, SslContextFactory, default_ssl_context, imap_session
from sync.outbound import OutboundPolicy
from sync.smtp_check import SmtpLogin, smtp_session


@dataclass(frozen=True)
class Envelope:
    """One SMTP transaction: the envelope sender, its recipients and the message bytes."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes


@dataclass(frozen=True)
class Outcome:
    """What happened to one recipient: accepted, or refused with a reason a person can read."""

    recipient: str
    ok: bool
    reason: str = ""


class TooLarge(SyncError):
    """The message is over the server's (or the provider's) size limit; nothing was sent."""

    code = "too_large"


def send_envelopes(
    login: SmtpLogin,
    envelopes: Sequence[Envelope],
    *,
    timeout: float,
    max_bytes: int,
    ssl_context: SslContextFactory = default_ssl_context,
    outbound: OutboundPolicy = STRICT_POLICY,
) -> list[Outcome]:
    """Log in once and send each envelope in its own transaction; never resend one.

    A login failure raises a SyncError before anything is sent; a message over the size limit (ours or
    the server's SIZE) raises TooLarge before the first MAIL FROM. After that, each recipient gets an
    Outcome: refused recipients and a connection that drops are reported, not retried, because a retry
    may deliver twice to those the server already accepted.
    """
    largest = max((len(e.data) for e in envelopes), default=0)
    if largest > max_bytes:
        raise TooLarge(_too_large(largest, max_bytes), "Make the email shorter.")
    outcomes: list[Outcome] = []
    with smtp_session(login, timeout=timeout, ssl_context=ssl_context, outbound=outbound) as client:
        server_max = client.esmtp_features.get("size", "")
        if server_max.isdigit() and int(server_max) and largest > int(server_max):
            raise TooLarge(_too_large(largest, int(server_max)), "Make the email shorter.")
        for index, envelope in enumerate(envelopes):
            try:
                refused = client.sendmail(envelope.sender, list(envelope.recipients), envelope.data)
            except smtplib.SMTPRecipientsRefused as exc:
                outcomes += [Outcome(r, False, _refusal(exc.recipients.get(r))) for r in envelope.recipients]
                continue
            except smtplib.SMTPResponseException as exc:
                reason = (
                    "the message is too large for the server"
                    if exc.smtp_code == 552
                    else _refusal((exc.smtp_code, exc.smtp_error))
                )
                outcomes += [Outcome(r, False, reason) for r in envelope.recipients]
                continue
            except (smtplib.SMTPServerDisconnected, OSError):
                # The server went away: this transaction and the ones after it did not happen (as far as
                # we can know); they are reported as failed, never retried into an inbox that may have it.
                for rest in envelopes[index:]:
                    outcomes += [Outcome(r, False, "the server closed the connection") for r in rest.recipients]
                break
            outcomes += [
                Outcome(r, r not in refused, _refusal(refused[r]) if r in refused else "") for r in envelope.recipients
            ]
    return outcomes


def _too_large(size: int, limit: int) -> str:
    return f"The email is {size / 1_000_000:.1f} MB; the server takes at most {limit / 1_000_000:.1f} MB."


def _refusal(answer: tuple[int, bytes | str] | None) -> str:
    """A short reason for a refused recipient; the server's words are not echoed (they may hold anything)."""
    if answer is None:
        return "refused by the server"
    code = answer[0]
    if code == 552:
        return "the message is too large for the server"
    if 400 <= code < 500:
        return f"the server refused it for now ({code})"
    return f"the server refused the address ({code})"


def append_to_sent(
    login: ImapLogin,
    folder: str,
    data: bytes,
    *,
    timeout: float,
    ssl_context: SslContextFactory = default_ssl_context,
    outbound: OutboundPolicy = STRICT_POLICY,
) -> None:
    """APPEND the sender's copy, marked \\Seen, to the Sent folder."""
    with imap_session(login, timeout=timeout, ssl_context=ssl_context, outbound=outbound) as client:
        client.append(folder, data, flags=(b"\\Seen",))


def sent_folder_name(
    login: ImapLogin,
    *,
    timeout: float,
    ssl_context: SslContextFactory = default_ssl_context,
    outbound: OutboundPolicy = STRICT_POLICY,
) -> str | None:
    """The Sent folder by SPECIAL-USE (\\Sent) or, failing that, by its usual names."""
    from sync.folders import discover_folders

    with imap_session(login, timeout=timeout, ssl_context=ssl_context, outbound=outbound) as client:
        folders = discover_folders(client)
    for folder in folders:
        if folder.role == "sent":
            return folder.name
    return None
