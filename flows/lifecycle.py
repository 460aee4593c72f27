"""Living with an account after setup, without Slack: sync now, pause, resume, edit, widen, reconnect, disconnect."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from flows.accounts import START_OPTIONS, FieldError, start_date_for
from flows.contacts import normalise_email
from flows.setup import NotYours, SetupState, start_setup
from models import accounts as account_queries
from models import setup_sessions as setup_queries
from models import states as account_states
from models.clock import utcnow
from models.db import session_scope
from models.states import SYNCABLE, AccountState
from models.tables import EmailAccount, UserSettings
from sync.folders import selected_by_default
from sync.oauth_tokens import GrantRevoker

NOTIFICATION_LEVELS = ("everything", "errors", "nothing")


class AccountGone(Exception):
    """The account an id points at no longer exists (a stale button)."""


@dataclass(frozen=True)
class AccountSummary:
    """What a card in App Home shows about one account."""

    id: int
    email: str
    state: AccountState
    paused_reason: str | None
    sync_mode: str
    start_option: str
    start_date: dt.date | None
    contact_scope: str
    visibility: str
    messages: int
    last_synced_at: dt.datetime | None
    last_error: str | None
    run_processed: int | None
    run_total: int | None
    folders: list[tuple[str, str | None, bool]]  # name, role, selected
    auth_kind: str = "password"  # password | oauth
    oauth_provider: str | None = None  # google | microsoft, for an account signed in with one


def summaries(db: Engine, *, team_id: str, user_id: str) -> list[AccountSummary]:
    """A person's accounts (never another person's), with counts and the running sync's progress."""
    with session_scope(db, readonly=True) as session:
        accounts = account_queries.accounts_of(session, team_id=team_id, user_id=user_id)
        counts = account_queries.message_counts(session, [a.id for a in accounts if a.id is not None])
        out = []
        for a in accounts:
            assert a.id is not None
            run = account_queries.current_run(session, a)
            out.append(
                AccountSummary(
                    id=a.id,
                    email=a.email,
                    state=AccountState(a.state),
                    paused_reason=a.paused_reason,
                    sync_mode=a.sync_mode,
                    start_option=a.start_option,
                    start_date=a.start_date,
                    contact_scope=a.contact_scope,
                    visibility=a.visibility,
                    messages=counts.get(a.id, 0),
                    last_synced_at=a.last_synced_at,
                    last_error=a.last_error_message,
                    run_processed=run.processed if run else None,
                    run_total=run.total if run else None,
                    folders=[(f.name, f.role, f.selected) for f in account_queries.folders_of(session, a.id)],
                    auth_kind=a.auth_kind,
                    oauth_provider=a.oauth_provider,
                )
            )
        return out


@dataclass(frozen=True)
class BulkOutcome:
    """What `/emailsync sync|pause|resume` did to one of the person's mailboxes."""

    email: str
    done: bool  # False: refused, and `refusal` says why
    queued: bool = False  # sync only: a sync is running and this one follows it
    refusal: str = ""


BULK_ACTIONS = ("sync", "pause", "resume")


def for_each_account(db: Engine, action: str, *, team_id: str, user_id: str) -> list[BulkOutcome]:
    """Sync, pause or resume every mailbox of one person (mailboxes being set up or disconnected are left out)."""
    if action not in BULK_ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {', '.join(BULK_ACTIONS)}")
    outcomes = []
    for account in summaries(db, team_id=team_id, user_id=user_id):
        if account.state in (AccountState.DISCONNECTED, AccountState.CONNECTING):
            continue
        try:
            queued = False
            if action == "sync":
                queued = sync_now(db, account.id, team_id=team_id, user_id=user_id)
            elif action == "pause":
                pause(db, account.id, team_id=team_id, user_id=user_id)
            else:
                resume(db, account.id, team_id=team_id, user_id=user_id)
        except FieldError as exc:
            outcomes.append(BulkOutcome(account.email, done=False, refusal=exc.message))
        else:
            outcomes.append(BulkOutcome(account.email, done=True, queued=queued))
    return outcomes


def sync_now(db: Engine, account_id: int, *, team_id: str, user_id: str) -> bool:
    """Make the account due now; True when a sync is running and this one will follow it."""
    with session_scope(db) as session:
        account = _owned(session, account_id, team_id, user_id)
        if account.state not in SYNCABLE:
            raise FieldError("state", _why_not_syncing(account))
        account_queries.request_sync_now(session, account_id=account_id)
        return account.lease_owner is not None


def pause(db: Engine, account_id: int, *, team_id: str, user_id: str, reason: str = "user") -> None:
    """Stop syncing until resumed (what is stored stays)."""
    with session_scope(db) as session:
        account = _owned(session, account_id, team_id, user_id)
        if not account_states.can_move(account.state, AccountState.PAUSED):
            raise FieldError("state", _why_not_syncing(account))
        account_states.move(account, AccountState.PAUSED)
        account.paused_reason, account.next_sync_at = reason, None
        session.add(account)


def resume(db: Engine, account_id: int, *, team_id: str, user_id: str) -> None:
    """Sync again, at once."""
    with session_scope(db) as session:
        account = _owned(session, account_id, team_id, user_id)
        if account.state != AccountState.PAUSED:
            return
        account_states.move(account, AccountState.ACTIVE)
        account.paused_reason, account.next_sync_at = None, utcnow()
        session.add(account)


def edit_settings(
    db: Engine,
    account_id: int,
    *,
    team_id: str,
    user_id: str,
    sync_mode: str | None = None,
    folders: list[str] | None = None,
    visibility: str | None = None,
) -> None:
    """Change what is synced or who sees it; a folder newly chosen gets the account's past window."""
    with session_scope(db) as session:
        account = _owned(session, account_id, team_id, user_id)
        if visibility is not None:
            if visibility not in ("private", "shared"):
                raise FieldError("visibility", "Choose private or shared.")
            account.visibility = visibility
        if sync_mode is not None:
            if sync_mode not in ("all", "labels"):
                raise FieldError("sync_mode", "Choose all emails or specific labels.")
            rows = account_queries.folders_of(session, account_id)
            chosen = set(folders or [])
            if sync_mode == "labels":
                if not chosen:
                    raise FieldError("folders", "Choose at least one folder, or sync all emails.")
                unknown = chosen - {f.name for f in rows}
                if unknown:
                    raise FieldError("folders", f"{', '.join(sorted(unknown))} no longer exists on the server.")
            for folder in rows:
                folder.selected = folder.name in chosen if sync_mode == "labels" else selected_by_default(folder.role)
                session.add(folder)
            account.sync_mode = sync_mode
            account.next_sync_at = utcnow() if account.state in account_queries.SYNCABLE_STATES else None
        session.add(account)


def widen_window(
    db: Engine,
    account_id: int,
    *,
    team_id: str,
    user_id: str,
    start: str,
    contact_scope: str,
    today: dt.date | None = None,
) -> dt.date:
    """Move the start further back: an extra past sync for the new part only; what is stored stays."""
    if start not in START_OPTIONS or start == "now":
        raise FieldError("start", "Choose 1 month, 3 months, 6 months or 1 year.")
    if contact_scope not in ("all", "contacts"):
        raise FieldError("contact_scope", "Choose all people or CRM contacts only.")
    new_start = start_date_for(start, today or dt.date.today())
    assert new_start is not None
    with session_scope(db) as session:
        account = _owned(session, account_id, team_id, user_id)
        old_start = account.start_date
        if old_start is not None and new_start >= old_start:
            raise FieldError("start", f"You already sync from {old_start:%d %b %Y}; choose an earlier start.")
        for folder in account_queries.folders_of(session, account_id):
            if folder.setup_uidnext is None:
                continue  # never seen by a sync yet: its first sync takes the whole new window anyway
            folder.backfill_hi = folder.setup_uidnext
            folder.backfill_done = False
            folder.backfill_since = new_start
            folder.backfill_before = old_start  # None when the account started "now": everything before setup
            folder.backfill_scope = contact_scope
            session.add(folder)
        account.start_option, account.start_date, account.contact_scope = start, new_start, contact_scope
        if account.state in account_queries.SYNCABLE_STATES:
            account.next_sync_at = utcnow()
        session.add(account)
        return new_start


def reconnect_identity(db: Engine, account_id: int) -> tuple[str, str | None] | None:
    """The address a reconnect link is for and the sign-in provider it used (None: a password), if it exists."""
    with session_scope(db, readonly=True) as session:
        account = account_queries.get_account(session, account_id)
        if account is None:
            return None
        return account.email, account.oauth_provider if account.auth_kind == "oauth" else None


def reconnect(db: Engine, account_id: int, *, team_id: str, user_id: str) -> tuple[SetupState, str]:
    """A connect link that replaces the account's password and keeps every setting."""
    with session_scope(db) as session:
        _owned(session, account_id, team_id, user_id)
    return start_setup(db, team_id=team_id, user_id=user_id, account_id=account_id, purpose="reconnect")


def disconnect(
    db: Engine,
    account_id: int,
    *,
    team_id: str,
    user_id: str,
    delete_mail: bool,
    revoker: GrantRevoker | None = None,
) -> None:
    """Stop syncing and forget the password or tokens; keep the synced mail or delete it.

    A grant from signing in with Google is revoked at the provider too (after the commit: best effort).
    """
    with session_scope(db) as session:
        account = _owned(session, account_id, team_id, user_id)
        grants = revoker.collect([account]) if revoker is not None else []
        if delete_mail:
            account_queries.delete_account(session, account_id=account_id)
        else:
            account_queries.disconnect_account(session, account_id=account_id)
    if revoker is not None:
        revoker.revoke(grants)


def delete_my_data(db: Engine, *, team_id: str, user_id: str, revoker: GrantRevoker | None = None) -> int:
    """Remove a person's accounts, secrets, synced mail and settings (revoking sign-in grants after the commit);
    return how many accounts went."""
    with session_scope(db) as session:
        accounts = account_queries.accounts_of(session, team_id=team_id, user_id=user_id)
        grants = revoker.collect(accounts) if revoker is not None else []
        for account in accounts:
            account_queries.delete_account(session, account_id=account.id)  # type: ignore[arg-type]
        account_queries.delete_person_settings(session, team_id=team_id, user_id=user_id)
        count = len(accounts)
    if revoker is not None:
        revoker.revoke(grants)
    return count


def general_settings(db: Engine, *, team_id: str, user_id: str) -> tuple[UserSettings, list[str]]:
    """A person's general settings and blocked addresses."""
    with session_scope(db, readonly=True) as session:
        prefs = setup_queries.get_user_settings(session, team_id=team_id, user_id=user_id)
        blocked = sorted(account_queries.blocked_patterns(session, team_id=team_id, user_id=user_id))
        return prefs, blocked


def save_general_settings(
    db: Engine, *, team_id: str, user_id: str, blocked: list[str] | None = None, **prefs: Any
) -> None:
    """Save visibility, tracking defaults, notification level and the blocked addresses and domains."""
    if "notification_level" in prefs and prefs["notification_level"] not in NOTIFICATION_LEVELS:
        raise FieldError("notification_level", "Choose everything, errors only or nothing.")
    if "default_visibility" in prefs and prefs["default_visibility"] not in ("private", "shared"):
        raise FieldError("default_visibility", "Choose private or shared.")
    patterns = [_blocked_pattern(p) for p in (blocked or []) if p.strip()]
    with session_scope(db) as session:
        row = setup_queries.get_user_settings(session, team_id=team_id, user_id=user_id)
        for name, value in prefs.items():
            if name not in UserSettings.model_fields or name in ("team_id", "user_id"):
                raise ValueError(f"unknown setting {name!r}")
            setattr(row, name, value)
        setup_queries.save(session, row)
        if blocked is not None:
            account_queries.replace_blocked(session, team_id=team_id, user_id=user_id, patterns=sorted(set(patterns)))


def owner_of(db: Engine, account_id: int) -> tuple[str, str] | None:
    """(team, user) owning an account, or None if it is gone."""
    with session_scope(db, readonly=True) as session:
        account = account_queries.get_account(session, account_id)
        return (account.team_id, account.user_id) if account else None


def _blocked_pattern(text: str) -> str:
    value = text.strip().lower().lstrip("@")
    if "@" in value:
        address = normalise_email(value)
        if address is None:
            raise FieldError("blocked", f"{text.strip()!r} is not an email address or a domain.")
        return address
    if "." not in value or " " in value:
        raise FieldError("blocked", f"{text.strip()!r} is not an email address or a domain like example.com.")
    return value


def _owned(session: Session, account_id: int, team_id: str, user_id: str) -> EmailAccount:
    account = account_queries.get_account(session, account_id)
    if account is None:
        raise AccountGone(str(account_id))
    if account.team_id != team_id or account.user_id != user_id:
        raise NotYours(f"account {account_id}")
    return account


def _why_not_syncing(account: EmailAccount) -> str:
    why: dict[str, str] = {
        AccountState.PAUSED: "This mailbox is paused; resume it first.",
        AccountState.NEEDS_REAUTH: "This mailbox needs you to reconnect it first.",
        AccountState.DISCONNECTED: "This mailbox is disconnected.",
        AccountState.CONNECTING: "Finish the setup first.",
    }
    return why.get(account.state, "This mailbox cannot sync now.")
