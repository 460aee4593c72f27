"""A big past sync runs in slices while a small account keeps being polled on time (issue 12, test 6).

One worker thread, the real tick and the local dispatcher, the real Dovecot: the big account's run is
cut into short slices, so the small account never waits for more than its poll interval plus one
slice; the big account's run stays one run row, announced once. The times come from the engine's
own "lease taken / given back" log lines, the marks an operator reads.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import re
import time
import uuid
from collections import defaultdict

from sqlalchemy import select

from flows.accounts import AccountDraft, add_account
from flows.export import export_messages
from models.db import session_scope
from models.tables import EmailAccount, SyncRun
from sync.engine import Outcome, sync_account
from sync.scheduler import Clock, LocalDispatcher
from tests.conftest import Mailbox
from tests.support.mail import make_message
from tests.support.network import LOOPBACK_POLICY

BIG = 800  # messages of the big account's past sync
BATCH_SECONDS = 0.25  # each batch of the big account takes at least this long, however fast the machine
POLL = 1.5  # seconds between polls of the small account
SLICE = 0.5  # the slice budget: a big past sync is cut into many slices
TICK = 0.2
# Scheduling noise on a loaded 2-core machine (thread wake-ups, SQLite busy waits): generous on purpose.
SLACK = 3.0
_MARK = re.compile(r"lease (taken|given back) account=(\d+) .* at=([\d.]+)")


class LeaseMarks(logging.Handler):
    """Collects (account, taken_at, given_back_at) of every slice from the engine's log."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.open: dict[int, float] = {}
        self.slices: dict[int, list[tuple[float, float]]] = defaultdict(list)

    def emit(self, record: logging.LogRecord) -> None:
        m = _MARK.search(record.getMessage())
        if m is None:
            return
        account, at = int(m.group(2)), float(m.group(3))
        if m.group(1) == "taken":
            self.open[account] = at
        elif account in self.open:
            self.slices[account].append((self.open.pop(account), at))


def new_account(deps, dovecot, start: str) -> tuple[int, Mailbox]:
    user = f"fair_{uuid.uuid4().hex[:8]}"
    dovecot.add_user(user, "secret-pw")
    box = Mailbox(dovecot, user, "secret-pw")
    draft = AccountDraft(team_id="TFAIR", user_id=f"U{user}", email=f"{user}@example.net", imap=box.login, start=start)
    account = add_account(
        deps.db, deps.secrets, draft, timeout=10, ssl_context=deps.config.ssl_context, outbound=LOOPBACK_POLICY
    )
    return account, box


def test_a_big_past_sync_in_slices_leaves_a_small_account_on_time(deps, dovecot, notifier):
    deps.config.batch_size = 25
    deps.config.poll_seconds = POLL
    old = dt.datetime.now() - dt.timedelta(days=5)
    small, small_box = new_account(deps, dovecot, "now")
    small_box.append("INBOX", make_message(subject="small"), date=old)
    assert sync_account(deps, small) is Outcome.DONE  # set up: from now on its polls are plain polls
    big, big_box = new_account(deps, dovecot, "1m")
    dovecot.seed_maildir(big_box.user, "INBOX", [(make_message(subject=f"big {i}"), old) for i in range(BIG)])

    real_progress = notifier.sync_progress

    def slow_batches(report):
        # Called after every committed batch (progress_seconds is 0), inside the slice: like a slow
        # server, it makes the big run last long enough to matter on a fast machine too.
        real_progress(report)
        if report.account_id == big:
            time.sleep(BATCH_SECONDS)

    notifier.sync_progress = slow_batches
    marks = LeaseMarks()
    engine_log = logging.getLogger("sync.engine")
    level = engine_log.level
    engine_log.setLevel(logging.INFO)
    engine_log.addHandler(marks)
    dispatcher = LocalDispatcher(deps, workers=1, slice_seconds=SLICE)  # one worker: the two must share it
    clock = Clock(deps, dispatcher, tick_seconds=TICK)
    clock.start()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with session_scope(deps.db) as session:
                row = session.get(EmailAccount, big)
                if row is not None and row.last_synced_at is not None:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("the big past sync did not finish within 240 s")
    finally:
        clock.stop()
        dispatcher.shutdown()
        engine_log.removeHandler(marks)
        engine_log.setLevel(level)

    # The big account: one run of many slices, every message stored, announced once.
    with session_scope(deps.db) as session:
        runs = session.execute(select(SyncRun).where(SyncRun.account_id == big)).scalars().all()
        assert [(r.kind, r.status, r.stored) for r in runs] == [("past", "done", BIG)]
        (run,) = runs
    big_slices = marks.slices[big]
    assert run.slices == len(big_slices) >= 4, (run.slices, len(big_slices))
    assert len(list(export_messages(deps.db, account_id=big))) == BIG
    started = [e for e in notifier.events if e[0] == "started" and e[1].account_id == big]
    assert len(started) == 1 and started[0][1].run_id == run.id

    # The small account, while the big run lasted: polled again and again, never kept waiting.
    run_start, run_end = big_slices[0][0], big_slices[-1][1]
    longest_slice = max(end - begin for begin, end in big_slices)
    bound = POLL + longest_slice + TICK + SLACK
    # Run whole, the big sync would have kept the small account waiting longer than the bound.
    assert run_end - run_start > bound, (run_end - run_start, bound)
    small_slices = [s for s in marks.slices[small] if run_start <= s[0] <= run_end]
    assert len(small_slices) >= 3, small_slices
    waits = [began - ended for (_, ended), (began, _) in itertools.pairwise(small_slices)]
    print(
        f"big run {run_end - run_start:.1f} s in {len(big_slices)} slices (longest {longest_slice:.2f} s); "
        f"small polled {len(small_slices)} times, longest wait {max(waits):.2f} s, bound {bound:.2f} s"
    )
    for (_, ended), (began, _) in itertools.pairwise(small_slices):
        assert began - ended <= bound, (began - ended, bound)
    # The small account's polls found nothing: they left no run row and made no notifier call.
    with session_scope(deps.db) as session:
        small_runs = session.execute(select(SyncRun).where(SyncRun.account_id == small)).scalars().all()
    assert len(small_runs) == 1  # its first sync only
    assert not [e for e in notifier.events if e[1].account_id == small and e[1].run_id != small_runs[0].id]
