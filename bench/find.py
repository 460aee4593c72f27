"""`find` over a team with 100,000 stored messages: how long the query takes, with and without its indexes.

Seeds a deterministic team (``random.Random(42)``) straight into the database through the engine's own
insert queries (models/mailstore.py): 10 people with 10,000 messages each, half of them sharing their mail,
with a few thousand correspondents at a few hundred domains (some write often, most rarely), threads of
one to six emails, three addresses per email on average, and a second team of 20,000 messages beside it.
Then it times ``flows.find.find`` (counts, one page of threads and their details: what the Slack answer
needs) for one person, for queries from rare to worst-case, on SQLite and PostgreSQL; the thread modal's
query; and the weekly digest's query. Each is run again after dropping the indexes migration 0009 adds
(the old single-column address index put back), to show what they are for.

Finally (``--app``, SQLite) the real app answers ``/emailsync find`` over HTTP against the fake Slack, and
the time from the signed request to the answer on the response URL is measured (Slack's limit is on the ack;
the answer may come later, but a person is waiting for it).

    python -m bench.find [--messages N] [--runs N] [--no-postgres] [--app] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SEED = 42
TEAM = "TBENCH"
OTHER_TEAM = "TOTHER"
PEOPLE = 10
OWN_DOMAIN = "ourco.example"
PG_ADMIN_URL = os.environ.get("EMAILSYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH = 5_000
# The indexes of migration 0009 that find and the digest use (message_address's replaces the email-only one).
NEW_INDEXES = (
    ("ix_message_address_email_message", "message_address", "email, message_id"),
    ("ix_message_team_thread", "message", "team_id, thread_key"),
    ("ix_message_account_internal", "message", "account_id, internal_date"),
)
OLD_INDEX = ("ix_message_address_email", "message_address", "email")


@dataclass
class Correspondent:
    email: str
    name: str
    weight: float


def correspondents(rng: random.Random, count: int, domains: int) -> list[Correspondent]:
    """People at companies; a few write very often (Zipf-like weights), most rarely."""
    first = [
        "Anna",
        "Jörg",
        "Zoë",
        "Łukasz",
        "Ingrid",
        "Mateo",
        "Chloé",
        "Søren",
        "Priya",
        "Olu",
        "Grace",
        "Tomás",
        "Lena",
        "Noah",
        "Mia",
        "Kai",
        "Nora",
        "Omar",
    ]
    last = [
        "Müller",
        "Schmidt",
        "Nowak",
        "García",
        "Dubois",
        "Tanaka",
        "Patel",
        "Okafor",
        "Smith",
        "Jensen",
        "Rossi",
        "Silva",
        "Moreau",
        "Becker",
    ]
    companies = [f"company{n}.example" for n in range(domains)]
    out = []
    for n in range(count):
        given, family = rng.choice(first), rng.choice(last)
        domain = companies[min(int(rng.paretovariate(1.2)) - 1, domains - 1)] if n else "acme.example"
        out.append(Correspondent(f"{given.lower()}.{family.lower()}.{n}@{domain}", f"{given} {family}", 1 / (n + 1)))
    return out


def seed(db: Any, messages: int, *, other_team: int) -> dict[str, Any]:
    """The team's people, accounts and messages; returns what the queries ask for."""
    from models.db import session_scope
    from models.mailstore import insert_addresses, insert_messages
    from models.tables import BlockedAddress, Contact, EmailAccount, UserSettings

    rng = random.Random(SEED)
    people = correspondents(rng, 5_000, 400)
    weights = [p.weight for p in people]
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    accounts: list[tuple[int, str, str, str, str]] = []  # id, team, user, email, visibility
    with session_scope(db) as session:
        for team, count in ((TEAM, PEOPLE), (OTHER_TEAM, 2)):
            for i in range(count):
                user = f"U{i:03d}"
                email = f"person{i}@{OWN_DOMAIN if team == TEAM else 'other.example'}"
                account = EmailAccount(
                    team_id=team,
                    user_id=user,
                    email=email,
                    imap_host="imap.example",
                    username=email,
                    secret_encrypted="x",
                    visibility="shared" if i % 2 else "private",
                )
                session.add(account)
                session.flush()
                assert account.id is not None
                accounts.append((account.id, team, user, email, account.visibility))
                session.add(UserSettings(team_id=team, user_id=user))
        # Two people blocked something (a domain, an address): find then checks every match against them.
        session.add(BlockedAddress(team_id=TEAM, user_id="U001", pattern="company7.example"))
        session.add(BlockedAddress(team_id=TEAM, user_id="U003", pattern=f"{people[40].email}"))
        # Some regular correspondents are contacts already (every seventh), most are not.
        session.add_all(Contact(team_id=TEAM, email=p.email, name=p.name) for p in people[3:2100:7])
    plan = [(a, messages // PEOPLE) for a in accounts if a[1] == TEAM]
    plan += [(a, other_team // 2) for a in accounts if a[1] == OTHER_TEAM]
    msg_seq = 0
    used: dict[str, int] = {}
    for (account_id, team, user, owner, visibility), count in plan:
        rows: list[dict[str, Any]] = []
        addrs: list[list[dict[str, Any]]] = []
        thread: str | None = None
        left_in_thread = 0
        for _ in range(count):
            msg_seq += 1
            if left_in_thread <= 0:
                thread, left_in_thread = f"<t{msg_seq}@bench.example>", rng.randint(1, 6)
            left_in_thread -= 1
            at = now - dt.timedelta(seconds=rng.randint(0, 730 * 86400))
            sent = rng.random() < 0.35
            others = rng.choices(people, weights=weights, k=rng.choice((1, 1, 2, 3)))
            colleague = f"person{rng.randrange(PEOPLE)}@{OWN_DOMAIN}" if rng.random() < 0.2 else None
            pairs: list[tuple[str, str, str | None]] = []
            if sent:
                pairs.append(("from", owner, "Owner"))
                pairs += [("to", p.email, p.name) for p in others]
            else:
                pairs.append(("from", others[0].email, others[0].name))
                pairs.append(("to", owner, "Owner"))
                pairs += [("cc", p.email, p.name) for p in others[1:]]
            if colleague:
                pairs.append(("cc", colleague, None))
            if team == TEAM and (user == "U000" or visibility == "shared"):  # what the viewer, U000, may see
                for p in others:
                    used[p.email] = used.get(p.email, 0) + 1
            rows.append(
                {
                    "account_id": account_id,
                    "team_id": team,
                    "message_id": f"<m{msg_seq}@bench.example>",
                    "gm_msgid": None,
                    "size": rng.randint(2_000, 80_000),
                    "content_hash": uuid.UUID(int=rng.getrandbits(128)).hex,
                    "thread_key": thread,
                    "subject": f"Subject {msg_seq % 997}",
                    "date": at,
                    "internal_date": at,
                    "direction": "sent" if sent else "received",
                    "visibility": visibility,
                    "snippet": "Hello, following up on our conversation about the proposal and the next steps.",
                    "text_body": None,
                    "html_body": None,
                    "attachments": None,
                    "truncated": False,
                    "bulk": rng.random() < 0.05,
                    "created_at": now,
                }
            )
            addrs.append([{"role": r, "position": n, "email": e, "name": nm} for n, (r, e, nm) in enumerate(pairs)])
            if len(rows) == BATCH:
                _flush(db, rows, addrs, insert_messages, insert_addresses)
                rows, addrs = [], []
        if rows:
            _flush(db, rows, addrs, insert_messages, insert_addresses)
    # The query targets: chosen from the generator's own distribution, not from the code under test.
    rare = min((n, email) for email, n in used.items() if n >= 5)[1]
    return {
        "viewer": (TEAM, "U000"),
        "rare_address": rare,
        "frequent_address": people[0].email,
        "busy_domain": "company0.example",
        "own_domain": OWN_DOMAIN,
        "name": "søren tanaka",
    }


def _flush(
    db: Any, rows: list[dict[str, Any]], addrs: list[list[dict[str, Any]]], insert_messages: Any, insert_addresses: Any
) -> None:
    from models.db import session_scope

    with session_scope(db) as session:
        pks = insert_messages(session, rows)
        insert_addresses(
            session, [{"message_id": pk, **a} for pk, group in zip(pks, addrs, strict=True) for a in group]
        )


def timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    fn()  # warm: the first run reads pages from disk
    samples, value = [], None
    for _ in range(runs):
        start = time.perf_counter()
        value = fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples, value


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "max": ordered[-1],
    }


def measure(db: Any, targets: dict[str, Any], runs: int) -> list[dict[str, Any]]:
    from flows import find as find_flow
    from flows import people as people_flow

    team, user = targets["viewer"]
    rows = []
    for label, query in (
        ("rare address", targets["rare_address"]),
        ("frequent address", targets["frequent_address"]),
        ("busy domain", targets["busy_domain"]),
        ("own domain (every email)", targets["own_domain"]),
        ("name", targets["name"]),
    ):
        samples, result = timed(lambda q=query: find_flow.find(db, team_id=team, user_id=user, query=q), runs)
        rows.append({"query": label, "emails": result.emails, "threads": result.threads, **summary(samples)})
        if label == "frequent address":
            anchor = result.page[0].open_id
    samples, thread = timed(lambda: find_flow.open_thread(db, team_id=team, user_id=user, message_id=anchor), runs)
    rows.append({"query": "open a thread", "emails": thread.total, "threads": 1, **summary(samples)})
    end = dt.datetime(2026, 11, 30, 8, tzinfo=dt.UTC)
    samples, found = timed(
        lambda: people_flow.suggestions_for(db, team_id=team, user_id=user, start=end - dt.timedelta(days=7), end=end),
        runs,
    )
    rows.append(
        {
            "query": "weekly digest (one person)",
            "emails": sum(s.messages for s in found),
            "threads": 0,
            **summary(samples),
        }
    )
    return rows


def drop_new_indexes(db: Any) -> None:
    with db.begin() as conn:
        for name, _table, _cols in NEW_INDEXES:
            conn.exec_driver_sql(f"DROP INDEX {name}")
        name, table, cols = OLD_INDEX
        conn.exec_driver_sql(f"CREATE INDEX {name} ON {table} ({cols})")
        conn.exec_driver_sql("ANALYZE")


def run_backend(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    from models.db import make_engine, upgrade

    db = make_engine(url)
    upgrade(db)
    started = time.perf_counter()
    targets = seed(db, args.messages, other_team=args.messages // 5)
    with db.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    seeded = time.perf_counter() - started
    print(f"{name}: seeded {args.messages:,} + {args.messages // 5:,} messages in {seeded:.1f} s", file=sys.stderr)
    with_index = measure(db, targets, args.runs)
    drop_new_indexes(db)
    without = measure(db, targets, max(3, args.runs // 4))
    db.dispose()
    return {"backend": name, "seed_seconds": seeded, "with_indexes": with_index, "without_new_indexes": without}


def app_answer(url: str, targets: dict[str, Any], runs: int) -> dict[str, Any]:
    """The real app over HTTP (fake Slack): signed slash command to the answer on the response URL."""
    import ssl
    from types import SimpleNamespace

    sys.path.insert(0, str(REPO))
    from tests.support.slack_app import running_app

    team, user = targets["viewer"]
    out: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_app(
            Path(tmp),
            SimpleNamespace(ssl_context=ssl.create_default_context),
            DATABASE_URL=url,  # type: ignore[arg-type]
        ) as app,
    ):
        for label, query in (("frequent address", targets["frequent_address"]), ("own domain", targets["own_domain"])):
            acks, answers = [], []
            for _ in range(runs + 1):
                before = len(app.fake.calls_to("response_url"))
                start = time.perf_counter()
                response = app.driver.slash_command(f"find {query}", user_id=user, team_id=team)
                acks.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200
                app.fake.wait_for("response_url", count=before + 1, timeout=60)
                answers.append((time.perf_counter() - start) * 1000)
            out[label] = {"ack": summary(acks[1:]), "answer": summary(answers[1:])}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.find", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000, help="messages in the team (default 100,000)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per query (default 20)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--app", action="store_true", help="also time the real app's answer over HTTP (SQLite)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        results.append(run_backend("SQLite", sqlite_url, args))
        if not args.no_postgres:
            results.append(_postgres(args))
        app = None
        if args.app:
            app_url = f"sqlite:///{Path(tmp) / 'app.db'}"
            from models.db import make_engine, upgrade

            db = make_engine(app_url)
            upgrade(db)
            targets = seed(db, args.messages, other_team=args.messages // 5)
            with db.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
            db.dispose()
            app = app_answer(app_url, targets, max(5, args.runs // 2))
    report(results, app)
    if args.json:
        Path(args.json).write_text(json.dumps({"backends": results, "app": app}, indent=2))
    return 0


def _postgres(args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    name = f"emailsync_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
        return run_backend("PostgreSQL", url, args)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def report(results: list[dict[str, Any]], app: dict[str, Any] | None) -> None:
    print("| backend | query | emails | threads | p50 ms | p95 ms | max ms | p50 without the new indexes | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for backend in results:
        for row, old in zip(backend["with_indexes"], backend["without_new_indexes"], strict=True):
            ratio = old["p50"] / row["p50"] if row["p50"] else float("nan")
            cells = [backend["backend"], row["query"], f"{row['emails']:,}", f"{row['threads']:,}"]
            cells += [f"{row[k]:.1f}" for k in ("p50", "p95", "max")] + [f"{old['p50']:.1f}", f"{ratio:.1f}x"]
            print("| " + " | ".join(cells) + " |")
    if app:
        print()
        print(
            "| `/emailsync find` through the app | ack p50 ms | ack max ms | answer p50 ms | answer p95 ms | max ms |"
        )
        print("|---|---|---|---|---|---|")
        for label, row in app.items():
            print(
                f"| {label} | {row['ack']['p50']:.1f} | {row['ack']['max']:.1f} | {row['answer']['p50']:.1f} | "
                f"{row['answer']['p95']:.1f} | {row['answer']['max']:.1f} |"
            )


if __name__ == "__main__":
    sys.exit(main())
