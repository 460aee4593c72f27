"""Counting every Slack Web API answer (by method: ok, error or rate_limited) for /metrics.

slack_sdk hands every HTTP answer, successes included, to the client's retry handlers in order, so a
handler that never retries sees each attempt: a 429 waited out and retried counts once as
rate_limited and once more for the answer that follows.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from sync.metrics import count_slack_call


def slack_method(url: str) -> str:
    """The API method of a Web API address ("https://slack.com/api/chat.postMessage" -> "chat.postMessage")."""
    return urlsplit(url).path.rsplit("/", 1)[-1] or "unknown"


def answer_status(response: HttpResponse | None) -> str:
    """ok, rate_limited or error, as Slack answered (no answer at all is an error)."""
    if response is None:
        return "error"
    if response.status_code == 429:
        return "rate_limited"
    if response.status_code != 200:
        return "error"
    body = response.body if isinstance(response.body, dict) else {}
    return "ok" if body.get("ok") else "error"


class CountingRetryHandler(RetryHandler):
    """Never retries; counts each answer. Put it first in the client's retry_handlers."""

    def __init__(self) -> None:
        super().__init__(max_retry_count=0)

    def can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        """Count the answer, never ask for a retry."""
        count_slack_call(slack_method(request.url), answer_status(response))
        return False
