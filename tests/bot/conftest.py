"""Fixtures for the Slack side: the app over HTTP against the fake Slack, and a headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.slack_app import SlackHarness, running_app
from tests.support.smtp import SmtpServer, start_smtp

CHROMIUM = "/usr/bin/chromium"


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


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, driven by Playwright (its own browser download is never used)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--disable-quic",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser page (its own cookies)."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()
