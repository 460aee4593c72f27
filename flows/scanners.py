"""User agents of machines that fetch images and follow links before (or instead of) a person: one list."""

from __future__ import annotations

# Apple Mail Privacy Protection prefetches every image through Apple's proxies with exactly this user agent.
APPLE_MPP_USER_AGENT = "Mozilla/5.0"

# Image proxies that fetch when the person opens the email: Gmail's and Outlook's are people.
HUMAN_PROXIES = ("googleimageproxy", "ggpht.com", "outlook-owa", "microsoft office", "ms-office", "outlook")

# Security scanners and link checkers (lower case substrings). They fetch on delivery, not on reading.
SCANNER_USER_AGENTS = (
    "barracuda",
    "mimecast",
    "proofpoint",
    "symantec",
    "messagelabs",
    "trendmicro",
    "fortiguard",
    "forcepoint",
    "sophos",
    "cisco",
    "ironport",
    "zscaler",
    "paloalto",
    "checkpoint",
    "safelinks",
    "microsoft-atp",
    "bingpreview",
    "python-requests",
    "python-urllib",
    "curl/",
    "wget/",
    "go-http-client",
    "java/",
    "okhttp",
    "libwww-perl",
    "slackbot",
    "facebookexternalhit",
    "linkedinbot",
    "twitterbot",
    "bot/",
    "spider",
    "crawler",
)


def scanner(user_agent: str) -> bool:
    """True for a known scanner or link checker (and for no user agent at all)."""
    lowered = user_agent.strip().lower()
    return not lowered or any(s in lowered for s in SCANNER_USER_AGENTS)


def human_proxy(user_agent: str) -> bool:
    """True for Gmail's or Outlook's image proxy, which fetches when a person opens the email."""
    lowered = user_agent.lower()
    return any(p in lowered for p in HUMAN_PROXIES)
