"""Slices, errors and stored messages are counted at the dispatcher boundary, against the real Dovecot."""

from __future__ import annotations

import threading

from models.db import session_scope
from models.tables import EmailAccount
from sync.metrics import REGISTRY
from sync.scheduler import LocalDispatcher
from tests.support.mail import make_message


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def run_once(deps, account_id: int) -> None:
    dispatcher = LocalDispatcher(deps, workers=1, slice_seconds=None)
    dispatcher.dispatch(account_id)
    dispatcher.shutdown()  # waits for the slice


def test_a_sync_an_idle_poll_and_a_failure_are_counted_by_kind_outcome_and_class(deps, connect, mailbox):
    account = connect(start="now")
    run_once(deps, account)  # the first sync: folders recorded, nothing to fetch
    stored = value("emailsync_messages_stored_total")
    done = value("emailsync_sync_slices_total", kind="incremental", outcome="done")
    failed = value("emailsync_sync_slices_total", kind="incremental", outcome="failed")
    refused = value("emailsync_sync_errors_total", code="refused")
    durations = value("emailsync_sync_slice_seconds_count", kind="incremental", outcome="done")

    for n in range(3):
        mailbox.append("INBOX", make_message(subject=f"new {n}"))
    run_once(deps, account)
    assert value("emailsync_messages_stored_total") == stored + 3
    run_once(deps, account)  # nothing new: a quiet poll, still one slice
    assert value("emailsync_messages_stored_total") == stored + 3
    assert value("emailsync_sync_slices_total", kind="incremental", outcome="done") == done + 2
    assert value("emailsync_sync_slice_seconds_count", kind="incremental", outcome="done") == durations + 2

    with session_scope(deps.db) as session:
        row = session.get(EmailAccount, account)
        row.imap_port = 1  # not a mail port: the outbound policy refuses it
        session.add(row)
    run_once(deps, account)
    assert value("emailsync_sync_errors_total", code="refused") == refused + 1
    assert value("emailsync_sync_slices_total", kind="incremental", outcome="failed") == failed + 1


def test_queue_depth_counts_the_slices_waiting_for_a_thread(deps, connect, mailbox):
    account = connect(start="now")
    dispatcher = LocalDispatcher(deps, workers=1, slice_seconds=None)
    gate = threading.Event()
    dispatcher._pool.submit(gate.wait, 60)  # the one thread is busy: what is dispatched now waits
    try:
        dispatcher.dispatch(account)
        dispatcher.dispatch(account + 1000)  # an id that does not exist: skipped when its turn comes
        assert value("emailsync_queue_depth") == 2
    finally:
        gate.set()
        dispatcher.shutdown()
    assert value("emailsync_queue_depth") == 0  # ran, or cancelled by the shutdown: none waits any more
