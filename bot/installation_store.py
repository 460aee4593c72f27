"""slack_sdk's installation and OAuth state stores over the project's database, tokens encrypted at rest."""

from __future__ import annotations

import datetime as dt
import logging
import secrets as random_tokens
from logging import Logger
from typing import Any

from slack_sdk.oauth.installation_store import Bot, Installation, InstallationStore
from slack_sdk.oauth.state_store import OAuthStateStore
from sqlalchemy import Engine

from models import installations as queries
from models.clock import utcnow
from models.db import session_scope
from models.secrets import SecretBox
from models.tables import SlackInstallation

log = logging.getLogger(__name__)

STATE_TTL_SECONDS = 600  # an install page left open longer than this has to be reloaded


def _moment(epoch: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(epoch, dt.UTC) if epoch is not None else None


def _epoch(moment: dt.datetime | None) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def _scopes(scopes: Any) -> str | None:
    if not scopes:
        return None
    return scopes if isinstance(scopes, str) else ",".join(scopes)


def _org_wide(is_enterprise_install: bool | None, team_id: str | None) -> str | None:
    """An org-wide install is found by its enterprise alone (slack_sdk's convention)."""
    return None if is_enterprise_install else team_id


class DbInstallationStore(InstallationStore):
    """One row per installer and workspace; a reinstall or a token refresh updates that row.

    The app asks for no incoming webhook, so webhook fields are not kept.
    """

    def __init__(self, db: Engine, secrets: SecretBox, logger: Logger | None = None) -> None:
        self.db = db
        self.secrets = secrets
        self._logger = logger or log

    def __repr__(self) -> str:
        return "DbInstallationStore()"

    @property
    def logger(self) -> Logger:
        return self._logger

    # -- encryption at the boundary -------------------------------------------------------------

    def _seal(self, token: str | None) -> str | None:
        return self.secrets.encrypt(token) if token else None

    def _open(self, sealed: str | None) -> str | None:
        return self.secrets.decrypt(sealed) if sealed else None

    # -- writing ----------------------------------------------------------------------------------

    def save(self, installation: Installation) -> None:
        """Store an installation (Bolt's OAuth flow, and a rotated one after a token refresh)."""
        i = installation
        with session_scope(self.db) as session:
            queries.save_installation(
                session,
                app_id=i.app_id,
                enterprise_id=i.enterprise_id,
                enterprise_name=i.enterprise_name,
                enterprise_url=i.enterprise_url,
                team_id=_org_wide(i.is_enterprise_install, i.team_id),
                team_name=i.team_name,
                is_enterprise_install=bool(i.is_enterprise_install),
                token_type=i.token_type,
                bot_id=i.bot_id,
                bot_user_id=i.bot_user_id,
                bot_scopes=_scopes(i.bot_scopes),
                bot_token_encrypted=self._seal(i.bot_token),
                bot_refresh_token_encrypted=self._seal(i.bot_refresh_token),
                bot_token_expires_at=_moment(i.bot_token_expires_at),
                user_id=i.user_id,
                user_scopes=_scopes(i.user_scopes),
                user_token_encrypted=self._seal(i.user_token),
                user_refresh_token_encrypted=self._seal(i.user_refresh_token),
                user_token_expires_at=_moment(i.user_token_expires_at),
                installed_at=_moment(i.installed_at) or utcnow(),
            )

    def save_bot(self, bot: Bot) -> None:
        """Store a refreshed bot token on the workspace's newest installation."""
        team_id = _org_wide(bot.is_enterprise_install, bot.team_id)
        with session_scope(self.db) as session:
            row = queries.find_latest(session, enterprise_id=bot.enterprise_id, team_id=team_id)
            if row is None:
                row = SlackInstallation(
                    enterprise_id=bot.enterprise_id, team_id=team_id, user_id=bot.bot_user_id, app_id=bot.app_id
                )
            row.bot_id, row.bot_user_id, row.bot_scopes = bot.bot_id, bot.bot_user_id, _scopes(bot.bot_scopes)
            row.bot_token_encrypted = self._seal(bot.bot_token)
            row.bot_refresh_token_encrypted = self._seal(bot.bot_refresh_token)
            row.bot_token_expires_at = _moment(bot.bot_token_expires_at)
            session.add(row)

    # -- reading ----------------------------------------------------------------------------------

    def _installation(self, row: SlackInstallation) -> Installation:
        return Installation(
            app_id=row.app_id,
            enterprise_id=row.enterprise_id,
            enterprise_name=row.enterprise_name,
            enterprise_url=row.enterprise_url,
            team_id=row.team_id,
            team_name=row.team_name,
            bot_token=self._open(row.bot_token_encrypted),
            bot_id=row.bot_id,
            bot_user_id=row.bot_user_id,
            bot_scopes=row.bot_scopes or "",
            bot_refresh_token=self._open(row.bot_refresh_token_encrypted),
            bot_token_expires_at=_epoch(row.bot_token_expires_at),
            user_id=row.user_id,
            user_token=self._open(row.user_token_encrypted),
            user_scopes=row.user_scopes or "",
            user_refresh_token=self._open(row.user_refresh_token_encrypted),
            user_token_expires_at=_epoch(row.user_token_expires_at),
            is_enterprise_install=row.is_enterprise_install,
            token_type=row.token_type,
            installed_at=row.installed_at.timestamp(),
        )

    def find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        """The newest installation of the workspace (or of this installer in it), tokens decrypted."""
        with session_scope(self.db) as session:
            row = queries.find_latest(
                session,
                enterprise_id=enterprise_id,
                team_id=_org_wide(is_enterprise_install, team_id),
                user_id=user_id,
            )
            return self._installation(row) if row is not None else None

    def find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        """The workspace's bot, from its newest installation that still has a bot token."""
        installation = self.find_installation(
            enterprise_id=enterprise_id, team_id=team_id, is_enterprise_install=is_enterprise_install
        )
        if installation is None or not installation.bot_token:
            return None
        return installation.to_bot()

    # -- deleting ---------------------------------------------------------------------------------

    def delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        """Forget the workspace's bot tokens."""
        with session_scope(self.db) as session:
            queries.clear_bot_tokens(session, enterprise_id=enterprise_id, team_id=team_id)

    def delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        """Delete the workspace's installations (or one installer's), tokens included."""
        with session_scope(self.db) as session:
            queries.delete_installations(session, enterprise_id=enterprise_id, team_id=team_id, user_id=user_id)

    def delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        """Delete everything stored for the workspace."""
        self.delete_installation(enterprise_id=enterprise_id, team_id=team_id)


class DbOAuthStateStore(OAuthStateStore):
    """OAuth `state` values in the project's database, each usable once within STATE_TTL_SECONDS."""

    def __init__(self, db: Engine, expiration_seconds: int = STATE_TTL_SECONDS, logger: Logger | None = None) -> None:
        self.db = db
        self.expiration_seconds = expiration_seconds
        self._logger = logger or log

    @property
    def logger(self) -> Logger:
        return self._logger

    def issue(self, *args: Any, **kwargs: Any) -> str:
        """A new random state, remembered until it expires."""
        state = random_tokens.token_urlsafe(24)
        with session_scope(self.db) as session:
            queries.add_state(session, state=state, expire_at=utcnow() + dt.timedelta(seconds=self.expiration_seconds))
        return state

    def consume(self, state: str) -> bool:
        """True once for a state this app issued and that has not expired."""
        if not state:
            return False
        with session_scope(self.db) as session:
            return queries.consume_state(session, state=state)
