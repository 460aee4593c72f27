"""Sign-in settings: the names and defaults of issue 9, and why a provider is off (start-up log and doctor)."""

from __future__ import annotations

import json
import logging

import pytest

from bot.services import log_sign_in_providers
from bot.settings import ConfigError, Settings, load_settings
from sync.oauth import MailServer
from tests.support.cli import cli_env, run_cli
from tests.support.oauth_server import GOOGLE, start_oauth_server


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in (
        "GOOGLE_CLIENT_ID",
        "GOOGLE_CLIENT_SECRET",
        "GOOGLE_OIDC_DISCOVERY_URL",
        "GOOGLE_IMAP_SERVER",
        "GOOGLE_SMTP_SERVER",
        "MICROSOFT_CLIENT_ID",
        "MICROSOFT_CLIENT_SECRET",
        "MICROSOFT_TENANT",
        "MICROSOFT_OIDC_DISCOVERY_URL",
        "MICROSOFT_IMAP_SERVER",
        "MICROSOFT_SMTP_SERVER",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_are_the_real_providers(clean_env) -> None:
    settings = Settings()  # type: ignore[call-arg]
    assert settings.google_oidc_discovery_url == "https://accounts.google.com/.well-known/openid-configuration"
    assert settings.microsoft_tenant == "common"
    assert settings.microsoft_oidc_discovery_url == (
        "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"
    )
    oauth = settings.oauth_providers()
    assert oauth.configured() == []
    assert oauth.missing == {
        "google": "GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET are not set",
        "microsoft": "MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET are not set",
    }

    both = Settings(  # type: ignore[call-arg]
        GOOGLE_CLIENT_ID="g-id",
        GOOGLE_CLIENT_SECRET="g-secret",
        MICROSOFT_CLIENT_ID="m-id",
        MICROSOFT_CLIENT_SECRET="m",
    ).oauth_providers()
    google, microsoft = both.configured()
    assert (str(google.imap), str(google.smtp)) == ("imap.gmail.com:993/tls", "smtp.gmail.com:465/tls")
    assert (str(microsoft.imap), str(microsoft.smtp)) == (
        "outlook.office365.com:993/tls",
        "smtp.office365.com:587/starttls",
    )
    assert microsoft.discovery_url == "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration"
    assert "g-secret" not in repr(google) and "g-secret" not in repr(both)
    assert google.scopes == ("https://mail.google.com/", "openid", "email")
    assert set(microsoft.scopes) >= {
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/SMTP.Send",
        "offline_access",
    }


def test_servers_and_tenant_are_validated(clean_env) -> None:
    assert MailServer.parse("mail.example.com:2525", starttls_ports=(587, 2525)).security == "starttls"
    assert MailServer.parse("127.0.0.1:10025/tls", starttls_ports=(587,)).security == "tls"
    assert MailServer.parse("[::1]:1143/starttls", starttls_ports=()).host == "::1"
    settings = Settings(  # type: ignore[call-arg]
        MICROSOFT_CLIENT_ID="m", MICROSOFT_CLIENT_SECRET="s", MICROSOFT_TENANT="contoso.onmicrosoft.com"
    )
    assert "/contoso.onmicrosoft.com/v2.0/" in settings.oauth_providers().configured()[0].discovery_url
    for name, value in (
        ("GOOGLE_IMAP_SERVER", "imap.gmail.com"),
        ("MICROSOFT_SMTP_SERVER", "smtp.office365.com:587/ssl"),
        ("MICROSOFT_TENANT", "common/../x"),
        ("GOOGLE_OIDC_DISCOVERY_URL", "accounts.google.com"),
    ):
        with pytest.raises(ConfigError, match=name):
            load_settings(**{name: value})


def test_the_start_log_says_why_a_provider_is_off(clean_env, caplog: pytest.LogCaptureFixture) -> None:
    oauth = Settings(GOOGLE_CLIENT_ID="only-the-id").oauth_providers()  # type: ignore[call-arg]
    with caplog.at_level(logging.INFO, logger="bot.services"):
        log_sign_in_providers(oauth)
    lines = {(r.levelname, r.getMessage()) for r in caplog.records}
    assert ("WARNING", "Sign in with Google is off: GOOGLE_CLIENT_SECRET is not set") in lines
    assert (
        "INFO",
        "Sign in with Microsoft is off: MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET are not set",
    ) in lines


def test_doctor_reports_each_provider(tmp_path) -> None:
    with start_oauth_server(GOOGLE) as idp:
        env = cli_env(
            tmp_path,
            GOOGLE_CLIENT_ID=idp.client_id,
            GOOGLE_CLIENT_SECRET=idp.client_secret,
            GOOGLE_OIDC_DISCOVERY_URL=idp.discovery_url,
            MICROSOFT_CLIENT_ID="half-configured",
        )
        result = run_cli(env, "doctor", "--json")
    report = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert report["sign in with Google"]["ok"] and f"issuer {idp.issuer}" in report["sign in with Google"]["detail"]
    assert report["sign in with Microsoft"] == {
        "name": "sign in with Microsoft",
        "ok": False,
        "detail": "off: MICROSOFT_CLIENT_SECRET is not set",
    }
    assert result.returncode == 1  # a half-configured provider is a mistake
    assert idp.client_secret not in result.stdout + result.stderr
