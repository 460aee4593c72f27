"""One batch of UIDs from the server to the batch writer: headers first, filter, then only the kept bodies.

The next batch's header FETCH is sent right after this batch's last body FETCH and this batch commits
while the server prepares those bodies (see ``BatchFetcher.process``); bodies come in size-bounded
rounds, only the text parts where BODYSTRUCTURE allows, whole messages where it does not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import imaplib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from models import mailstore
from models.db import session_scope
from models.tables import Folder
from sync.batch_writer import BatchWrite, BatchWriter, Candidate, location
from sync.bodystructure import build_body, plan_body
from sync.fetch import Command, FetchData, FetchPipe
from sync.parse import Headers, parse_body, parse_headers
from sync.slice_context import BudgetExhausted, SliceContext

log = logging.getLogger(__name__)

HEADER_ITEM = b"BODY.PEEK[HEADER]"
HEADER_KEY = b"BODY[HEADER]"
BODY_ITEM = b"BODY.PEEK[]"
BODY_KEY = b"BODY[]"
STRUCTURE_ITEM = b"BODYSTRUCTURE"


class BatchFetcher:
    """Fetches batches over one pipelined connection and hands each to the writer."""

    def __init__(self, ctx: SliceContext, writer: BatchWriter) -> None:
        self.ctx = ctx
        self.writer = writer
        self._pipe: FetchPipe | None = None
        self._ahead: tuple[tuple[int, ...], bytes] | None = None  # (UIDs, tag) of a header FETCH sent ahead
        self._structure = ctx.cfg.use_bodystructure  # ask for BODYSTRUCTURE (until a server refuses)

    def process(
        self,
        client: IMAPClient,
        folder: Folder,
        uids: Sequence[int],
        *,
        past: bool,
        cursor: dict[str, int],
        next_uids: Sequence[int] | None = None,
    ) -> None:
        """Headers first, filter, bodies only for what is kept, then commit messages and cursor together.

        ``next_uids`` is the folder's next batch, if any. Then the IMAP server and this process take
        turns less: that batch's header FETCH is sent right after this batch's last body FETCH, and
        this batch's commit waits until the next batch's bodies have been asked for, so the server
        prepares them meanwhile. The commit stays one transaction with its cursor, in batch order, and
        the last batch of a loop commits before returning. A batch that is not committed yet (because
        the run stops on an error) is fetched again by the next run, from the cursor.
        """
        ctx = self.ctx
        if ctx.batches_begun:
            try:
                ctx.check_budget()  # at least one batch per slice, so every slice makes progress
            except BudgetExhausted:
                self.writer.flush()
                raise
        ctx.batches_begun += 1
        pipe = self._pipe_of(client)
        ahead, self._ahead = self._ahead, None
        tag = ahead[1] if ahead is not None and ahead[0] == tuple(uids) else pipe.send(uids, self._header_items())
        try:
            resp = pipe.collect([tag])
        except IMAPClientError as exc:
            if isinstance(exc, imaplib.IMAP4.abort) or not self._structure:
                raise
            # A server that refuses BODYSTRUCTURE: whole messages for the rest of the session.
            log.warning("account %s: BODYSTRUCTURE refused (%s); fetching whole messages", ctx.account_id, exc)
            self._structure = False
            resp = pipe.fetch([(uids, self._header_items())])
        candidates: list[Candidate] = []
        for uid in uids:
            data = resp.get(uid)
            if data is None:  # expunged since the SEARCH
                continue
            candidates.append(self._candidate(uid, data))
        del resp  # the candidates keep what they need; the structures and header blocks can go
        existing = self._existing(candidates)
        # Messages of the previous batch that are not committed yet count as stored.
        waiting = self.writer.waiting_by_key()
        batch = BatchWrite(folder=folder, cursor=cursor, processed=len(uids))
        to_store: dict[mailstore.DedupKey, Candidate] = {}
        for cand in candidates:
            key = cand.key()
            if key in existing:
                batch.locations.append(location(existing[key], folder, cand.uid, cand.flags))
            elif key in waiting:
                batch.late_locations.append((waiting[key], cand.uid, cand.flags))
            elif key in to_store:
                to_store[key].extra_uids.append((cand.uid, cand.flags))
            elif self._filtered_out(cand, folder, past):
                batch.skipped += 1
            else:
                to_store[key] = cand
        batch.stored = list(to_store.values())
        if next_uids and time.monotonic() >= ctx.deadline:
            next_uids = None  # this slice ends after this batch: nothing to send ahead
        self._fetch_bodies(pipe, batch.stored, next_uids)
        self.writer.hold(batch)  # the previous batch commits, if the body FETCH did not already wait for it
        if not next_uids:
            self.writer.flush()

    def _candidate(self, uid: int, data: dict[bytes, Any]) -> Candidate:
        raw_header = data.get(HEADER_KEY) or b""
        failed = False
        try:
            headers = parse_headers(raw_header)
        except Exception:  # parse_headers is defensive; this is the last line
            log.warning("account %s: unreadable header of UID %s", self.ctx.account_id, uid, exc_info=True)
            headers = Headers(None, None, None, None, [], _hash(raw_header))
            failed = True
        internal = data.get(b"INTERNALDATE")
        if isinstance(internal, dt.datetime) and internal.tzinfo is None:
            internal = internal.replace(tzinfo=dt.UTC)
        gm = data.get(b"X-GM-MSGID")
        return Candidate(
            uid=uid,
            size=int(data.get(b"RFC822.SIZE") or len(raw_header)),
            flags=flag_text(data.get(b"FLAGS", ())),
            internal_date=internal,
            headers=headers,
            gm_msgid=int(gm) if gm is not None else None,
            plan=plan_body(data.get(STRUCTURE_ITEM)),
            header_len=len(raw_header),
            failed=failed,
        )

    def _existing(self, candidates: list[Candidate]) -> dict[mailstore.DedupKey, int]:
        if not candidates:
            return {}
        with session_scope(self.ctx.deps.db, readonly=True) as session:  # no write lock: a snapshot is enough
            return mailstore.find_existing(session, account_id=self.ctx.account_id, keys=[c.key() for c in candidates])

    def _filtered_out(self, cand: Candidate, folder: Folder, past: bool) -> bool:
        emails = cand.headers.emails()
        blocked = self.ctx.blocked
        if blocked and any(is_blocked(e, blocked) for e in emails):
            return True
        if not past:
            return False  # mail arriving after setup follows the folder choice alone
        since = folder.backfill_since
        if since is not None and cand.internal_date is not None and cand.internal_date.date() < since:
            return True  # only reached in a re-match, whose SEARCH has no SINCE
        return folder.backfill_scope == "contacts" and not (emails & self.ctx.contacts)

    def _header_items(self) -> list[bytes]:
        items = [b"RFC822.SIZE", b"INTERNALDATE", b"FLAGS", HEADER_ITEM]
        if self._structure:
            items.append(STRUCTURE_ITEM)
        if self.ctx.gmail:
            items.append(b"X-GM-MSGID")
        return items

    def _pipe_of(self, client: IMAPClient) -> FetchPipe:
        if self._pipe is None or self._pipe.client is not client:
            self._pipe, self._ahead = FetchPipe(client), None
        return self._pipe

    def _fetch_bodies(self, pipe: FetchPipe, cands: list[Candidate], next_uids: Sequence[int] | None) -> None:
        """Bodies in size-bounded rounds of pipelined FETCHes; the next batch's headers are sent after the last."""
        cfg = self.ctx.cfg
        planned: list[Candidate] = []
        whole: list[Candidate] = []
        for cand in cands:
            if cand.size > cfg.max_message_bytes:
                cand.truncated = True  # keep the headers, mark it; never pull a huge body
            elif cand.plan is None:
                whole.append(cand)  # no usable BODYSTRUCTURE: the whole message, parsed here
            elif not cand.plan.specs():
                cand.body = build_body(cand.plan, {})  # attachments only: the structure says it all
            else:
                planned.append(cand)
        rounds: list[tuple[list[Command], Callable[[FetchData], None], list[Candidate] | None]] = []
        limit = cfg.body_chunk_bytes
        for chunk in _size_chunks(planned, limit, lambda c: c.plan.octets() + c.header_len):  # type: ignore[union-attr]
            rounds.append((*self._text_parts_round(chunk), chunk))
        for chunk in _size_chunks(whole, limit, lambda c: c.size):
            rounds.append((*self._whole_round(chunk), None))
        if not rounds and next_uids:
            self._ahead = (tuple(next_uids), pipe.send(next_uids, self._header_items()))
        for i, (commands, handle, parts_of) in enumerate(rounds):
            tags = [pipe.send(uids, items) for uids, items in commands]
            if i == len(rounds) - 1 and next_uids:
                self._ahead = (tuple(next_uids), pipe.send(next_uids, self._header_items()))
            self.writer.flush()  # the batch before commits while the server prepares these bodies
            try:
                resp = pipe.collect(tags)
            except IMAPClientError as exc:
                if isinstance(exc, imaplib.IMAP4.abort) or parts_of is None:
                    raise
                # A server that refuses a part number: these messages whole, as before BODYSTRUCTURE.
                log.warning("account %s: body parts refused (%s); fetching whole messages", self.ctx.account_id, exc)
                commands, handle = self._whole_round(parts_of)
                resp = pipe.fetch(commands)
            handle(resp)
            del resp

    def _text_parts_round(self, chunk: list[Candidate]) -> tuple[list[Command], Callable[[FetchData], None]]:
        """Only the text/plain and text/html parts: one FETCH per set of part numbers.

        A message that is a single text part is fetched whole (BODY.PEEK[]) and its body cut after
        the header: the same bytes as its part 1, with the header (already read) once more.
        """
        groups: dict[tuple[str, ...], list[int]] = {}
        for cand in chunk:
            groups.setdefault(cand.plan.sections(), []).append(cand.uid)  # type: ignore[union-attr]
        commands: list[Command] = [
            (uids, [b"BODY.PEEK[%s]" % s.encode() for s in sections]) for sections, uids in groups.items()
        ]

        def handle(resp: FetchData) -> None:
            for cand in chunk:
                plan = cand.plan
                assert plan is not None
                data = resp.get(cand.uid) or {}
                if plan.single:
                    whole = data.get(BODY_KEY)
                    if whole is not None and not after_header(whole, cand.header_len):
                        self._parse_whole(cand, whole)  # the header FETCH did not match: parse it all
                        continue
                    parts = {"1": whole[cand.header_len :] if whole is not None else None}
                else:
                    parts = {s: data.get(b"BODY[%s]" % s.encode()) for s in plan.specs()}
                if any(v is None for v in parts.values()):
                    cand.failed = True  # expunged since the header FETCH
                    continue
                try:
                    cand.body = build_body(plan, parts)  # type: ignore[arg-type]
                except Exception:
                    log.warning("account %s: undecodable body of UID %s", self.ctx.account_id, cand.uid, exc_info=True)
                    cand.failed = True

        return commands, handle

    def _whole_round(self, chunk: list[Candidate]) -> tuple[list[Command], Callable[[FetchData], None]]:
        """Whole messages (BODY.PEEK[]), parsed here: for a message without a usable BODYSTRUCTURE."""

        def handle(resp: FetchData) -> None:
            for cand in chunk:
                raw = (resp.get(cand.uid) or {}).get(BODY_KEY)
                if raw is None:
                    cand.failed = True
                else:
                    self._parse_whole(cand, raw)

        return [([c.uid for c in chunk], [BODY_ITEM])], handle

    def _parse_whole(self, cand: Candidate, raw: bytes) -> None:
        try:
            cand.body = parse_body(raw)
        except Exception:
            log.warning("account %s: unparsable body of UID %s", self.ctx.account_id, cand.uid, exc_info=True)
            cand.failed = True


def flag_text(raw: Iterable[Any]) -> str:
    """IMAP flags as stored: sorted names separated by spaces, without \\Recent."""
    names = (f.decode() if isinstance(f, bytes) else str(f) for f in raw)
    # \Recent belongs to one IMAP session, not to the message: storing it would flap on every sync.
    return " ".join(sorted(n for n in names if n.lower() != "\\recent"))


def is_blocked(email: str, blocked: set[str]) -> bool:
    """Whether an address is blocked, by itself or by its domain or a parent domain."""
    if email in blocked:
        return True
    domain = email.rpartition("@")[2]
    # A domain blocks its subdomains too: blocking example.com blocks mail.example.com.
    parts = domain.split(".")
    return any(".".join(parts[i:]) in blocked for i in range(len(parts) - 1))


def after_header(whole: bytes, header_len: int) -> bool:
    """Whether ``whole`` (BODY[]) has its header's blank line where BODY[HEADER] ended."""
    return header_len >= len(whole) or whole[:header_len].endswith((b"\n\r\n", b"\n\n"))


def _hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _size_chunks(cands: list[Candidate], limit: int, size: Callable[[Candidate], int]) -> Iterator[list[Candidate]]:
    chunk: list[Candidate] = []
    total = 0
    for cand in cands:
        n = size(cand)
        if chunk and total + n > limit:
            yield chunk
            chunk, total = [], 0
        chunk.append(cand)
        total += n
    if chunk:
        yield chunk
