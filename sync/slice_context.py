"""What the parts of one sync slice share: the account, the run's counters, the lease fence and the budget.

The run row of a plain poll exists only in memory until something happens (DESIGN section 5, item 12):
the first write that changes mail calls ``note_change``, which inserts the row in that same fenced
transaction; a poll that finds nothing leaves no row and makes no notifier call.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from sqlmodel import Session

from models import accounts as account_queries
from models import states
from models.clock import utcnow
from models.db import session_scope
from models.states import AccountState
from models.tables import EmailAccount, SyncRun
from sync.deadline import Deadline
from sync.errors import LeaseLost
from sync.notifier import RunReport

if TYPE_CHECKING:
    from sync.engine import EngineDeps


class BudgetExhausted(Exception):
    """The slice's time is up; stop between batches."""


_batches_committed = 0  # per process, for the test-only hard exit


class SliceContext:
    """Per-slice state read and updated by the passes, the fetch pipeline and the batch writer."""

    def __init__(
        self,
        deps: EngineDeps,
        account: EmailAccount,
        run: SyncRun,
        *,
        token: int,
        budget: float,
        slice_deadline: Deadline,
        recorded: bool,
    ) -> None:
        self.deps = deps
        self.cfg = deps.config
        self.account = account
        self.account_id: int = account.id  # type: ignore[assignment]
        self.token = token
        self.run = run  # counters kept in memory between batches; a row in the database once recorded
        self.recorded = recorded  # False: a poll that has changed nothing yet, so no row exists
        self.deadline = time.monotonic() + budget  # between batches: the slice's budget
        self.slice_deadline = slice_deadline  # inside a command: the connection is shut down when it passes
        self.last_progress = 0.0
        self.slice_batches = 0  # committed in this slice
        self.batches_begun = 0  # started in this slice
        self.removed_locations = False  # a location went: the orphan sweep must run
        self.condstore = False  # from CAPABILITY, set once connected
        self.gmail = False
        self.estimates: dict[int, int] = {}  # folder id -> MESSAGES, until its backfill SEARCH counts exactly
        self.contacts: set[str] = set()
        self.blocked: set[str] = set()
        self._announce = False  # the row was just inserted: sync_started follows the commit

    def writing(self) -> AbstractContextManager[Session]:
        """A write transaction that first checks, in the same transaction, that we still hold the lease."""
        return fenced_session(self.deps, self.account_id, self.token)

    def note_change(self, session: Session) -> None:
        """Something happened (mail stored, changed or removed): make sure the run has its row.

        Called inside the fenced transaction that writes the change, so the row and the change commit
        together; ``after_write`` then announces the run.
        """
        if self.recorded:
            return
        self.run.slices = 1
        session.add(self.run)
        session.flush()
        account = session.get(EmailAccount, self.account_id)
        assert account is not None
        if account.state not in (AccountState.PAUSED, AccountState.DISCONNECTED):  # a pause that landed meanwhile wins
            states.move(account, AccountState.SYNCING)
        account.current_run_id = self.run.id
        session.add(account)
        self.recorded = True
        self._announce = True

    def skip_announcement(self) -> None:
        """The run's first event is its failure: the failure notification stands for the start."""
        self._announce = False

    def forget_unsaved_run(self) -> None:
        """The transaction that inserted the run's row rolled back: start over with a row not yet written."""
        old = self.run
        self.run = SyncRun(
            account_id=old.account_id,
            kind=old.kind,
            started_at=old.started_at,
            total=old.total,
            processed=old.processed,
            stored=old.stored,
            skipped=old.skipped,
            failed_messages=old.failed_messages,
        )
        self.recorded = False

    def after_write(self) -> None:
        """After a commit that may have recorded the run: tell the notifier the run began."""
        if self._announce:
            self._announce = False
            self.deps.notifier.sync_started(self.report())

    def after_batch(self) -> None:
        """After a batch committed: count it, and report progress at most once per progress interval."""
        global _batches_committed
        _batches_committed += 1
        self.slice_batches += 1
        if self.cfg.exit_after_batch is not None and _batches_committed >= self.cfg.exit_after_batch:
            os._exit(3)  # test-only: die hard right after a commit, like a kill -9
        self.after_write()
        now = time.monotonic()
        if self.recorded and now - self.last_progress >= self.cfg.progress_seconds:
            self.last_progress = now
            self.deps.notifier.sync_progress(self.report())

    def check_budget(self) -> None:
        """Raise BudgetExhausted once the slice's budget is spent."""
        if time.monotonic() >= self.deadline:
            raise BudgetExhausted

    def report(self) -> RunReport:
        """The run as the notifier sees it."""
        run = self.run
        return RunReport(
            account_id=self.account_id,
            run_id=run.id,  # type: ignore[arg-type]
            team_id=self.account.team_id,
            user_id=self.account.user_id,
            email=self.account.email,
            kind=run.kind,
            total=max(run.total, run.processed),
            processed=run.processed,
            stored=run.stored,
            skipped=run.skipped,
            failed_messages=run.failed_messages,
            contacts_matched=run.contacts_matched,
            elapsed_seconds=(utcnow() - run.started_at).total_seconds(),
        )


@contextmanager
def fenced_session(deps: EngineDeps, account_id: int, token: int) -> Iterator[Session]:
    """A session whose transaction starts by renewing the lease (the fence), or raises LeaseLost."""
    with session_scope(deps.db) as session:
        if not account_queries.renew_lease(
            session, account_id=account_id, owner=deps.owner, token=token, ttl=deps.config.lease_ttl
        ):
            raise LeaseLost("Another process took over this account's sync.")
        yield session
