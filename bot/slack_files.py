"""Downloading a file someone shared with the bot, from Slack's private file URL, with the bot's token."""

from __future__ import annotations

import urllib.error
import urllib.request
from urllib.parse import urlsplit

SLACK_FILE_HOSTS = (".slack.com", ".slack-gov.com", ".slack-edge.com")


class SlackFileError(Exception):
    """The file could not be downloaded (the message says why, for the person who shared it)."""


def token_may_go_to(url: str, api_url: str) -> bool:
    """Whether the bot token may be sent to this URL: Slack's own hosts over HTTPS, or SLACK_API_URL's host."""
    target, api = urlsplit(url), urlsplit(api_url)
    host = (target.hostname or "").lower()
    if host and host == (api.hostname or "").lower() and target.scheme == api.scheme:
        return True  # GovSlack, or the test fake, serves files next to its API
    return target.scheme == "https" and (host in ("slack.com", "slack-gov.com") or host.endswith(SLACK_FILE_HOSTS))


def download_private_file(url: str, token: str, *, api_url: str, max_bytes: int, timeout: float = 15.0) -> bytes:
    """The file's bytes; SlackFileError when it is larger than max_bytes, or Slack answers with a page instead."""
    if not token_may_go_to(url, api_url):
        raise SlackFileError("Slack gave a download address outside Slack; the file was not read.")
    request = urllib.request.Request(url)
    # Unredirected: a redirect to a CDN never carries the token along.
    request.add_unredirected_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            kind = (response.headers.get("Content-Type") or "").lower()
            data: bytes = response.read(max_bytes + 1)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise SlackFileError(f"Slack did not hand the file over ({type(exc).__name__}); send it again.") from None
    if kind.startswith("text/html"):
        # What Slack sends when the token may not read the file: its sign-in page, with status 200.
        raise SlackFileError("Slack did not let me read the file; send it again in this conversation.")
    if len(data) > max_bytes:
        raise SlackFileError(f"The file is larger than {max_bytes // (1024 * 1024)} MB; split it and send the parts.")
    return data
