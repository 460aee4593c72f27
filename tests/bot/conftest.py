"""Fixtures for the Slack side: the app over HTTP against the fake Slack, and a headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.slack_app import SlackHarness, running_app
from tests.support.smtp import SmtpServer, start_smtp


@pytest.fixture
def slack(tmp_path, dovecot) -> Iterator[SlackHarness]:
    """The real app served over HTTP on loopback, talking to a strict fake Slack."""
    with running_app(tmp_path, dovecot) as harness:
        yield harness


@pytest.fixture
def smtp(dovecot) -> Iterator[SmtpServer]:
    """An aiosmtpd with STARTTLS and AUTH, using Dovecot's test certificate."""
    server = start_smtp(dovecot.cafile, dovecot.cafile.parent / "key.pem")
    yield server
    server.stop()


@pytest.fixture
def app(tmp_path, stack) -> Iterator[SlackHarness]:
    """The app with this flavour's GOOGLE_* or MICROSOFT_* settings pointing at the local provider."""
    with running_app(tmp_path, stack.dovecot, **stack.settings()) as harness:
        yield harness
