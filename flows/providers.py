"""Guessing IMAP and SMTP settings from an address: built-in presets, RFC 6186 SRV records, then imap.<domain>;
and telling Google and Microsoft mailboxes apart (known domains, else the domain's MX records)."""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.resolver


@dataclass(frozen=True)
class ServerGuess:
    """Suggested server settings and where they came from."""

    imap_host: str
    imap_port: int
    imap_security: str
    smtp_host: str
    smtp_port: int
    smtp_security: str
    source: str  # preset name, "dns" or "guess"
    note: str = ""


_GMAIL = (
    "imap.gmail.com",
    993,
    "tls",
    "smtp.gmail.com",
    465,
    "tls",
    "Gmail",
    "Gmail needs an app password (Google Account → Security → App passwords) with IMAP enabled.",
)
_OUTLOOK = (
    "outlook.office365.com",
    993,
    "tls",
    "smtp.office365.com",
    587,
    "starttls",
    "Outlook / Microsoft 365",
    "Microsoft accounts with two-step verification need an app password.",
)
_ICLOUD = (
    "imap.mail.me.com",
    993,
    "tls",
    "smtp.mail.me.com",
    587,
    "starttls",
    "iCloud",
    "iCloud needs an app-specific password from appleid.apple.com.",
)
_YAHOO = (
    "imap.mail.yahoo.com",
    993,
    "tls",
    "smtp.mail.yahoo.com",
    465,
    "tls",
    "Yahoo",
    "Yahoo needs an app password from Account security.",
)
_FASTMAIL = (
    "imap.fastmail.com",
    993,
    "tls",
    "smtp.fastmail.com",
    465,
    "tls",
    "Fastmail",
    "Fastmail needs an app password from Settings → Privacy & Security.",
)

PRESETS: dict[str, tuple[str, int, str, str, int, str, str, str]] = {
    "gmail.com": _GMAIL,
    "googlemail.com": _GMAIL,
    "outlook.com": _OUTLOOK,
    "hotmail.com": _OUTLOOK,
    "live.com": _OUTLOOK,
    "msn.com": _OUTLOOK,
    "office365.com": _OUTLOOK,
    "icloud.com": _ICLOUD,
    "me.com": _ICLOUD,
    "mac.com": _ICLOUD,
    "yahoo.com": _YAHOO,
    "ymail.com": _YAHOO,
    "fastmail.com": _FASTMAIL,
    "fastmail.fm": _FASTMAIL,
}


def guess_servers(email: str, *, dns_lifetime: float = 2.0) -> ServerGuess:
    """The best guess for this address's servers (never raises; falls back to imap.<domain>)."""
    domain = email.rpartition("@")[2].strip().lower()
    preset = PRESETS.get(domain)
    if preset:
        return ServerGuess(*preset)
    imap = _srv(f"_imaps._tcp.{domain}", dns_lifetime)
    imap_security = "tls"
    if imap is None:
        imap = _srv(f"_imap._tcp.{domain}", dns_lifetime)
        imap_security = "starttls"
    smtp = _srv(f"_submissions._tcp.{domain}", dns_lifetime)
    smtp_security = "tls"
    if smtp is None:
        smtp = _srv(f"_submission._tcp.{domain}", dns_lifetime)
        smtp_security = "starttls"
    if imap is not None:
        smtp_host, smtp_port = smtp or (f"smtp.{domain}", 587)
        return ServerGuess(imap[0], imap[1], imap_security, smtp_host, smtp_port, smtp_security, "dns")
    return ServerGuess(f"imap.{domain}", 993, "tls", f"smtp.{domain}", 587, "starttls", "guess")


def _srv(name: str, lifetime: float) -> tuple[str, int] | None:
    try:
        answers = dns.resolver.resolve(name, "SRV", lifetime=lifetime)
    except (dns.exception.DNSException, OSError):
        return None
    records = sorted(answers, key=lambda r: (r.priority, -r.weight))
    for record in records:
        target = str(record.target).rstrip(".")
        if target:  # "." means the service is explicitly not offered
            return target, int(record.port)
    return None


# Mailbox domains of the two providers that sign people in (OAuth) rather than take passwords.
SIGN_IN_DOMAINS = {
    "gmail.com": "google",
    "googlemail.com": "google",
    "outlook.com": "microsoft",
    "hotmail.com": "microsoft",
    "live.com": "microsoft",
    "msn.com": "microsoft",
}


def mail_provider(email: str, *, dns_lifetime: float = 2.0) -> str | None:
    """Where the address's mail lives: "google" or "microsoft" (a known domain, else its MX hosts), else None.

    Looks up DNS for unknown domains (at most `dns_lifetime` seconds): call it off any event loop.
    """
    domain = email.rpartition("@")[2].strip().lower().rstrip(".")
    if not domain or "." not in domain:
        return None
    known = SIGN_IN_DOMAINS.get(domain)
    if known is not None:
        return known
    for host in _mx_hosts(domain, dns_lifetime):
        # Google Workspace: aspmx.l.google.com and its alternates, or smtp.google.com (since 2023);
        # Microsoft 365 and Outlook.com: <tenant>.mail.protection.outlook.com, *.olc.protection.outlook.com.
        if host == "smtp.google.com" or host.endswith((".l.google.com", ".googlemail.com")):
            return "google"
        if host.endswith(".protection.outlook.com"):
            return "microsoft"
    return None


def _mx_hosts(domain: str, lifetime: float) -> list[str]:
    try:
        answers = dns.resolver.resolve(domain, "MX", lifetime=lifetime)
    except (dns.exception.DNSException, OSError):
        return []
    return [str(r.exchange).rstrip(".").lower() for r in sorted(answers, key=lambda r: r.preference)]
