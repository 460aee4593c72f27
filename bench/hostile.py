"""Hostile IMAP servers against one sync slice and one connection test: peak memory and time against the deadline.

For each behaviour of tests/support/hostile_imap.py (a scriptable IMAP server over TLS on loopback), one
sync slice (``sync.engine.sync_account`` once, SQLite) and one connection test
(``flows.accounts.check_connection``) each run in a fresh child process (tests/support/sync_child.py), which
reports its peak RSS (VmHWM: imports included) and how much the slice or the test added to it. Targets
(issue 8, defect 5): peak RSS under 150 MB whatever the server sends, and every slice and connection test
ends within its deadline plus 5 s.

    python -m bench.hostile                 # slice deadline 30 s, connect deadline 20 s, read timeout 30 s (~3 min)
    python -m bench.hostile --quick         # slice deadline 8 s, connect deadline 5 s (~1 min)
    python -m bench.hostile --healthz       # also /healthz latency while 50 hostile connect attempts run
    python -m bench.hostile --healthz-only  # only that (~1 min)
    python -m bench.hostile --slice-deadline S --connect-deadline S --timeout S --json out.json
    python -m bench.hostile --baseline DIR  # also the same children on another checkout (e.g. `git archive` of main)

The production defaults are a 360 s slice deadline (EMAILSYNC_SLICE_SECONDS + 60) and a 20 s connect
deadline; the slice deadline is shorter here so a dripping server does not hold the run for six minutes.
With ``--baseline DIR`` every attempt also runs on the code in DIR (settings it does not know are left
out), and a child that has not ended after ``--baseline-timeout`` seconds is killed (its peak RSS is read
first). The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
RSS_TARGET_MB = 150.0
GRACE_S = 5.0


@dataclass(frozen=True)
class Scenario:
    """One hostile behaviour, scripted for a sync slice and for a connection test (which only LISTs)."""

    name: str
    slice: dict[str, Any]
    connect: dict[str, Any]


def scenarios() -> list[Scenario]:
    """Every behaviour, with a normal server first for reference."""
    huge = {"behaviour": "huge_literal", "literal_bytes": 200 * MB, "claimed_size": 500}
    long_ok = b"* OK " + b"z" * 200
    return [
        Scenario("normal server (50 messages)", {"messages": 50}, {}),
        Scenario("drip in the greeting", *[{"behaviour": "drip", "drip_at": "greeting"}] * 2),
        Scenario(
            "drip mid-response (FETCH / LIST)",
            {"behaviour": "drip", "drip_at": "fetch"},
            {"behaviour": "drip", "drip_at": "list"},
        ),
        Scenario("huge literal (200 MB, claims 500 B)", {**huge}, {**huge, "literal_at": "list"}),
        Scenario(
            "untagged flood (* 1 EXISTS)",
            {"behaviour": "untagged_flood", "flood_at": "fetch"},
            {"behaviour": "untagged_flood", "flood_at": "list"},
        ),
        Scenario(
            "untagged flood (200-byte * OK lines)",
            {"behaviour": "untagged_flood", "flood_at": "fetch", "flood_line": long_ok},
            {"behaviour": "untagged_flood", "flood_at": "list", "flood_line": long_ok},
        ),
        Scenario("silent after login", *[{"behaviour": "silent_after_login"}] * 2),
    ]


@dataclass
class Row:
    """One measured attempt."""

    scenario: str
    what: str  # "slice" or "connect"
    code: str  # "this branch" or "baseline"
    outcome: str
    error: str
    wall_s: float
    deadline_s: float
    peak_rss_mb: float
    grown_mb: float | None  # None: killed before it could tell
    server_sent_mb: float

    @property
    def in_time(self) -> bool:
        """Ended within its deadline plus the grace."""
        return self.wall_s <= self.deadline_s + GRACE_S

    @property
    def rss_ok(self) -> bool:
        """Peak RSS under the target."""
        return 0 < self.peak_rss_mb < RSS_TARGET_MB


def say(text: str) -> None:
    """Progress, to stderr."""
    print(text, file=sys.stderr, flush=True)


def _error_code(db_url: str, account_id: int) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            code = conn.execute(
                text("SELECT last_error_code FROM email_account WHERE id = :a"), {"a": account_id}
            ).scalar()
    finally:
        engine.dispose()
    return str(code or "")


def measure(args: argparse.Namespace, workdir: Path) -> list[Row]:
    """Every scenario: a slice, then a connection test, each in its own child against its own server."""
    from models.db import make_engine, upgrade

    codes: list[tuple[str, Path | None, float]] = [
        ("this branch", None, max(args.slice_deadline, args.connect_deadline) + 60)
    ]
    if args.baseline:
        codes.append(("baseline", Path(args.baseline).resolve(), args.baseline_timeout))
    db_url = f"sqlite:///{workdir / 'bench.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    rows: list[Row] = []
    try:
        for scenario in scenarios():
            for label, code, timeout in codes:
                rows += _measure_one(args, workdir, engine, scenario, label, code, timeout)
    finally:
        engine.dispose()
    return rows


def _measure_one(
    args: argparse.Namespace,
    workdir: Path,
    engine: Any,
    scenario: Scenario,
    label: str,
    code: Path | None,
    child_timeout: float,
) -> list[Row]:
    """One slice and one connection test of one scenario on one code, against a server of their own."""
    from flows.accounts import AccountDraft, add_account
    from models.secrets import SecretBox
    from sync.imap_session import ImapLogin
    from tests.support.hostile_imap import HostileImapServer, Script
    from tests.support.network import LOOPBACK_POLICY
    from tests.support.sync_child import TEST_KEY, run_child

    db_url = engine.url.render_as_string(hide_password=False)
    rows: list[Row] = []
    with HostileImapServer(workdir=workdir / f"tls-{uuid.uuid4().hex[:6]}") as server:
        login = ImapLogin(server.host, server.port, "tls", "bench", "pw")
        draft = AccountDraft(team_id="T", user_id=uuid.uuid4().hex[:8], email="b@example.net", imap=login, start="1y")
        box = SecretBox([TEST_KEY])
        account = add_account(engine, box, draft, timeout=5, ssl_context=server.ssl_context, outbound=LOOPBACK_POLICY)
        server.script = Script(**scenario.slice)
        say(f"{scenario.name}: one sync slice (deadline {args.slice_deadline:g} s), {label}")
        config = {"timeout": args.timeout, "slice_deadline_seconds": args.slice_deadline}
        spec = {"kind": "slice", "cafile": str(server.cafile), "db": db_url, "account_id": account, "config": config}
        sent = server.stats.sent_bytes
        result = run_child(spec, timeout=child_timeout, code=code)
        row = _row(scenario.name, "slice", label, result, args.slice_deadline, server.stats.sent_bytes - sent)
        row.error = _error_code(db_url, account) if row.outcome == "failed" else ""
        rows.append(row)

        server.script = Script(**scenario.connect)
        say(f"{scenario.name}: one connection test (deadline {args.connect_deadline:g} s), {label}")
        spec = {
            "kind": "connect",
            "cafile": str(server.cafile),
            "host": server.host,
            "port": server.port,
            "deadline_seconds": args.connect_deadline,
            "config": {"timeout": args.timeout},
        }
        sent = server.stats.sent_bytes
        result = run_child(spec, timeout=child_timeout, code=code)
        rows.append(
            _row(scenario.name, "connect", label, result, args.connect_deadline, server.stats.sent_bytes - sent)
        )
    return rows


def _row(name: str, what: str, label: str, result: dict[str, Any], deadline: float, sent: int) -> Row:
    if result.get("exit") is None:
        outcome = "no end: killed"
    elif result.get("exit") != 0:
        outcome = f"exit {result['exit']}"
        say(result.get("stderr", "")[-2000:])
    else:
        outcome = str(result.get("outcome"))
    return Row(
        scenario=name,
        what=what,
        code=label,
        outcome=outcome,
        error=str(result.get("code", "")),
        wall_s=float(result.get("wall_s", 0.0)),
        deadline_s=deadline,
        peak_rss_mb=result.get("peak_kb", 0) / 1024,
        grown_mb=result["grown_kb"] / 1024 if "grown_kb" in result else None,
        server_sent_mb=sent / MB,
    )


# ------------------------------------------------------------------------------------------------
# /healthz latency while 50 hostile connect attempts run
#
# THE LEAD'S SECTION (connect page, flows/setup.py and the outbound policy are being reworked in parallel):
# adjust the form fields, the setup call and the settings here when they change. As written: the real app
# (tests/support/slack_app.py running_app: uvicorn in a thread of this process, the fake Slack, SQLite), one
# setup link per attempt (flows.setup.start_setup, a different person each, so the per-person limit does not
# interfere), the CSRF cookie from a GET of /connect/<token>, then 50 POSTs of the connect form at once, all
# pointing at a server that drips its greeting; /healthz is polled every 50 ms before (idle) and while
# they run. The app's connection tests run in their own bounded pool (EMAILSYNC_CONNECT_WORKERS +
# EMAILSYNC_CONNECT_QUEUE), so most of the 50 are answered "busy" (503) at once.


def healthz_under_connect_attempts(
    workdir: Path, *, attempts: int = 50, connect_deadline: float = 20.0, idle_seconds: float = 5.0
) -> dict[str, Any]:
    """/healthz p50/p99/max idle and while ``attempts`` connect-page submits against a dripping server run."""
    import re

    import httpx

    from flows import setup as setup_flow
    from tests.support.hostile_imap import HostileImapServer, Script
    from tests.support.slack_app import running_app

    with HostileImapServer(Script(behaviour="drip", drip_at="greeting"), workdir=workdir / "tls-healthz") as server:
        settings = {"EMAILSYNC_CONNECT_DEADLINE": str(connect_deadline), "EMAILSYNC_IMAP_TIMEOUT": "30"}
        with running_app(workdir / "app", server, **settings) as harness:  # type: ignore[arg-type]
            base = harness.base_url
            forms: list[tuple[str, str, str]] = []
            with httpx.Client(base_url=base, timeout=60) as client:
                for n in range(attempts):
                    _, token = setup_flow.start_setup(harness.services.db, team_id="T0001", user_id=f"UH{n:04d}")
                    page = client.get(f"/connect/{token}")
                    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
                    cookie = page.cookies.get("emailsync_csrf")
                    assert csrf is not None and cookie, f"no CSRF token on the connect page ({page.status_code})"
                    forms.append((token, csrf.group(1), cookie))
                idle = _poll_healthz(client, seconds=idle_seconds)

            statuses: list[int] = []
            lock = threading.Lock()

            def submit(token: str, csrf: str, cookie: str) -> None:
                data = {
                    "csrf": csrf,
                    "email": "victim@example.net",
                    "password": "pw",
                    "imap_host": server.host,
                    "imap_port": str(server.port),
                    "imap_security": "tls",
                }
                with httpx.Client(base_url=base, timeout=connect_deadline + 30) as c:
                    cookies = {"Cookie": f"emailsync_csrf={cookie}"}
                    status = c.post(f"/connect/{token}", data=data, headers=cookies).status_code
                with lock:
                    statuses.append(status)

            threads = [threading.Thread(target=submit, args=form, daemon=True) for form in forms]
            start = time.monotonic()
            for thread in threads:
                thread.start()
            with httpx.Client(base_url=base, timeout=30) as client:
                busy = _poll_healthz(client, until=lambda: all(not t.is_alive() for t in threads))
            took = time.monotonic() - start
            for thread in threads:
                thread.join()
    counts: dict[str, int] = {}
    for status in statuses:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return {"idle": _stats(idle), "busy": _stats(busy), "attempt_statuses": counts, "attempts_took_s": took}


def _poll_healthz(client: Any, *, seconds: float | None = None, until: Any = None) -> list[float]:
    samples: list[float] = []
    end = time.monotonic() + (seconds or 0.0)
    while (seconds is not None and time.monotonic() < end) or (until is not None and not until()):
        t0 = time.perf_counter()
        client.get("/healthz")
        samples.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.05)
    return samples


def _stats(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max_ms": ordered[-1],
    }


# ------------------------------------------------------------------------------------------------
# Report


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def report(rows: list[Row], healthz: dict[str, Any] | None) -> str:
    """The Markdown table (and the /healthz figures when measured)."""
    head = [
        "server",
        "attempt",
        "code",
        "outcome",
        "wall s",
        "deadline s",
        "in time",
        "peak RSS MB",
        "grown MB",
        "server sent MB",
    ]
    body = [
        [
            r.scenario,
            r.what,
            r.code,
            r.outcome + (f" ({r.error})" if r.error else ""),
            f"{r.wall_s:.1f}",
            f"{r.deadline_s:g}",
            "yes" if r.in_time else "NO",
            f"{r.peak_rss_mb:.0f}",
            f"{r.grown_mb:.1f}" if r.grown_mb is not None else "-",
            f"{r.server_sent_mb:.1f}",
        ]
        for r in rows
    ]
    out = [_table(head, body)] if rows else []
    ours = [r for r in rows if r.code == "this branch"]
    worst = max(ours, key=lambda r: r.peak_rss_mb) if ours else None
    if worst is not None:
        out.append(
            f"\nThis branch: peak RSS under {RSS_TARGET_MB:.0f} MB: {'yes' if all(r.rss_ok for r in ours) else 'NO'} "
            f"(highest {worst.peak_rss_mb:.0f} MB: {worst.scenario}, {worst.what}). "
            f"Every attempt within its deadline + {GRACE_S:.0f} s: {'yes' if all(r.in_time for r in ours) else 'NO'}."
        )
    if healthz is not None:
        idle, busy = healthz["idle"], healthz["busy"]
        out.append(
            "\n"
            + _table(
                ["/healthz", "n", "p50 ms", "p99 ms", "max ms"],
                [
                    [name, str(s.get("n", 0)), *(f"{s.get(k, 0):.1f}" for k in ("p50_ms", "p99_ms", "max_ms"))]
                    for name, s in (("idle", idle), ("during the attempts", busy))
                ],
            )
        )
        out.append(
            f"\nConnect attempts: {sum(healthz['attempt_statuses'].values())} answered "
            f"{healthz['attempt_statuses']} in {healthz['attempts_took_s']:.1f} s."
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="slice deadline 8 s, connect deadline 5 s")
    parser.add_argument("--slice-deadline", type=float, default=None, help="seconds (default 30; --quick 8)")
    parser.add_argument("--connect-deadline", type=float, default=None, help="seconds (default 20; --quick 5)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-read timeout, seconds (default 30)")
    parser.add_argument("--healthz", action="store_true", help="also /healthz under 50 hostile connect attempts")
    parser.add_argument("--healthz-only", action="store_true", help="only /healthz under 50 hostile connect attempts")
    parser.add_argument("--baseline", help="also run every attempt on the app checked out in this directory")
    parser.add_argument("--baseline-timeout", type=float, default=40.0, help="kill a baseline child after (40 s)")
    parser.add_argument("--json", help="write every row to this file as JSON")
    args = parser.parse_args(argv)
    args.slice_deadline = args.slice_deadline or (8.0 if args.quick else 30.0)
    args.connect_deadline = args.connect_deadline or (5.0 if args.quick else 20.0)
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        workdir = Path(tmp)
        rows = [] if args.healthz_only else measure(args, workdir)
        healthz = None
        if args.healthz or args.healthz_only:
            say(f"/healthz during 50 connect attempts to a dripping server (deadline {args.connect_deadline:g} s)")
            healthz = healthz_under_connect_attempts(workdir, connect_deadline=args.connect_deadline)
    print(report(rows, healthz))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [asdict(r) for r in rows], "healthz": healthz}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
