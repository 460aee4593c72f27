"""What one folder needs this slice, decided from its stored state and STATUS alone (no IMAP, no database).

A pure function, so every decision of the no-change fast path (one STATUS, no SELECT, no FETCH) is
tested without a server: unchanged or not, a flag pass due, how many messages were expunged, a
UIDVALIDITY change, a backfill still pending.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STATUS_ITEMS = [b"UIDNEXT", b"UIDVALIDITY", b"MESSAGES"]
MODSEQ_ITEM = b"HIGHESTMODSEQ"


@dataclass(frozen=True)
class FolderStatus:
    """A folder's STATUS answer."""

    uidnext: int
    uidvalidity: int
    messages: int
    highestmodseq: int | None  # only where CONDSTORE is advertised

    @classmethod
    def parse(cls, raw: Mapping[bytes, Any]) -> FolderStatus:
        """From imapclient's folder_status() dictionary."""
        return cls(
            uidnext=int(raw[b"UIDNEXT"]),
            uidvalidity=int(raw[b"UIDVALIDITY"]),
            messages=int(raw[b"MESSAGES"]),
            highestmodseq=int(raw[MODSEQ_ITEM]) if MODSEQ_ITEM in raw else None,
        )


@dataclass(frozen=True)
class StoredFolder:
    """The folder's cursors as the database holds them before this slice."""

    uidvalidity: int | None
    fwd_uid: int
    backfill_done: bool
    last_uidnext: int | None
    last_messages: int | None
    highestmodseq: int | None
    last_flag_pass_at: dt.datetime | None

    @classmethod
    def of(cls, folder: Any) -> StoredFolder:
        """From a Folder row (anything with these attributes)."""
        return cls(
            uidvalidity=folder.uidvalidity,
            fwd_uid=folder.fwd_uid,
            backfill_done=folder.backfill_done,
            last_uidnext=folder.last_uidnext,
            last_messages=folder.last_messages,
            highestmodseq=folder.highestmodseq,
            last_flag_pass_at=folder.last_flag_pass_at,
        )


@dataclass(frozen=True)
class FolderPlan:
    """The passes one folder gets this slice; ``skip`` means one STATUS was all it needed."""

    initialise: bool  # first sight of the folder, or a UIDVALIDITY change: record the setup boundary
    rematch: bool  # UIDVALIDITY changed: every UID is matched again by Message-ID and size
    unchanged: bool  # STATUS says nothing was added, expunged or (with CONDSTORE) changed
    flag_pass_due: bool  # without CONDSTORE: time to re-read the flags of recent mail
    new_mail: bool  # UIDs above the forward cursor exist
    condstore_flags: bool  # flags changed since the stored MODSEQ: FETCH CHANGEDSINCE
    expunged: int | None  # how many messages left since the last STATUS (None: unknown, so check)
    check_deletions: bool
    backfill: bool  # the past sync of this folder is not finished
    skip: bool


def plan_folder(
    stored: StoredFolder,
    status: FolderStatus,
    *,
    condstore: bool,
    has_start_date: bool,
    now: dt.datetime,
    flag_pass_seconds: float,
) -> FolderPlan:
    """Decide the passes of one folder; the state is taken as it will be after a (re)initialisation."""
    initialise = stored.uidvalidity is None or stored.uidvalidity != status.uidvalidity
    rematch = stored.uidvalidity is not None and stored.uidvalidity != status.uidvalidity
    if initialise:
        # What the initialisation writes (see passes.FolderPasses.init_folder): everything below
        # UIDNEXT is the past, the last STATUS is forgotten.
        # After a UIDVALIDITY change every UID is re-matched, whatever the start date.
        stored = StoredFolder(
            uidvalidity=status.uidvalidity,
            fwd_uid=status.uidnext - 1,
            backfill_done=not rematch and not has_start_date,
            last_uidnext=None,
            last_messages=None,
            highestmodseq=None,
            last_flag_pass_at=stored.last_flag_pass_at,
        )
    flag_pass_due = not condstore and (
        stored.last_flag_pass_at is None or (now - stored.last_flag_pass_at).total_seconds() >= flag_pass_seconds
    )
    unchanged = (
        stored.backfill_done
        and stored.last_uidnext == status.uidnext
        and stored.last_messages == status.messages
        and (not condstore or stored.highestmodseq == status.highestmodseq)
    )
    expunged: int | None = None
    if stored.last_uidnext is not None and stored.last_messages is not None:
        # Appends raise UIDNEXT and MESSAGES alike; only expunges lower MESSAGES alone.
        expunged = (status.uidnext - stored.last_uidnext) - (status.messages - stored.last_messages)
    return FolderPlan(
        initialise=initialise,
        rematch=rematch,
        unchanged=unchanged,
        flag_pass_due=flag_pass_due,
        new_mail=status.uidnext - 1 > stored.fwd_uid,
        condstore_flags=(
            not unchanged
            and condstore
            and stored.highestmodseq is not None
            and status.highestmodseq != stored.highestmodseq
        ),
        expunged=expunged,
        check_deletions=not unchanged and (expunged is None or expunged > 0),
        backfill=not stored.backfill_done,
        skip=unchanged and not flag_pass_due,
    )
