"""Past-sync benchmark (DESIGN section 10): emailsync against the raw fetch, mbsync and offlineimap.

Seeds a deterministic mailbox (``random.Random(42)``) into a private Dovecot over TLS, then measures in
one run, each tool in its own child process (peak RSS from ``os.wait4``):

1. the raw imapclient fetch of every message (the ceiling for a Python IMAP client),
2. emailsync's past sync into SQLite (engine called directly, looped until it is not ``Outcome.MORE``),
3. ``mbsync`` (isync) and 4. ``offlineimap`` (offlineimap3) pulling the same mailbox into a Maildir,
5. emailsync's no-change re-sync right after, also for mailboxes of 100 and (``--scale``) 100,000 messages.

    python -m bench.past_sync [--messages N | --quick] [--skip-peers] [--scale] [--json FILE] [--profile FILE]

Children (internal): ``python -m bench.past_sync --child raw|past|nochange --spec JSON``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import email.policy
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a file (under cProfile): make the repo importable
    sys.path.insert(0, str(REPO))

from bench.report import fmt, machine, say, table, write_json  # noqa: E402 (after the path above)

SEED = 42
PASSWORD = "bench-pw"
DEFAULT_MESSAGES = 10_000
QUICK_MESSAGES = 1_000
SMALL_MESSAGES = 100
SCALE_MESSAGES = 100_000
RAW_BATCH = 500
NO_CHANGE_RUNS = 5
PROCESS_RUNS = 5  # whole-process figures (emailsync sync, mbsync, --help): the median of this many runs
MONTHS_SPREAD = 18
# Folder names use "/" as the hierarchy separator; "Projekte" becomes an (empty) folder of its own.
FOLDERS: tuple[tuple[str, float], ...] = (
    ("INBOX", 0.40),
    ("Sent", 0.15),
    ("Archive", 0.13),
    ("Projekte/Ångström", 0.10),
    ("Entwürfe Ärger", 0.07),
    ("Projekte/Kunden 2025", 0.07),
    ("Newsletter", 0.08),
)
OWNER_NAME = "Bench Owner"

# ------------------------------------------------------------------------------------------------
# The mailbox generator


def _words_of(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_FIRST = _words_of(
    "Anna Jörg Zoë Łukasz Ingrid Mateo Chloé Søren Ana Björn Émile Hiroshi Priya Olu Grace Tomás Ülkü "
    "Lena Noah Mia Elías Saoirse Dmitri Fatima Kai Nora Jonas Amélie Felipe Yuki Omar Ines Pieter "
    "Ravi Sofía Lars"
)
_LAST = _words_of(
    "Müller Schmidt Øvergaard Nowak García Dubois Ångström Tanaka Patel Okafor Smith Jensen Rossi "
    "Novák Fernández Kowalski Weiß Lindqvist O'Brien Haddad Silva Moreau Becker Yücel Costa Nakamura"
)
_DOMAINS = _words_of(
    "acme-gmbh.example beispiel.example kunde.example contoso.example northwind.example "
    "fabrikam.example lieferant.example partner-ag.example stadtwerke.example uni-muenster.example "
    "agentur.example tailspin.example wingtip.example adatum.example litware.example "
    "proseware.example"
)
_WORDS = _words_of(
    "the project meeting invoice offer contract delivery schedule update review draft budget quarter "
    "report customer order shipment please thanks regards attached below question answer next week "
    "monday friday Angebot Rechnung Lieferung Besprechung Termin Grüße Änderung Übersicht Prüfung "
    "Größe Maßnahme für über können müssen würde bitte danke Entwurf Ärger Straße Frühjahr Qualität "
    "Bestätigung Kündigung Zahlung price discount volume forecast pipeline lead follow-up call notes "
    "agenda minutes decision risk issue café naïve résumé déjà coöperation smörgåsbord Ångström fjord "
    "æble øl"
)


def _make_senders(rng: random.Random, count: int = 300) -> list[tuple[str, str]]:
    """A few hundred (display name, address) pairs; the same for every mailbox size."""
    seen: set[str] = set()
    senders: list[tuple[str, str]] = []
    while len(senders) < count:
        first, last, domain = rng.choice(_FIRST), rng.choice(_LAST), rng.choice(_DOMAINS)
        local = re.sub(r"[^a-z]", "", (first[0] + last).lower().encode("ascii", "ignore").decode()) or "x"
        addr = f"{local}{len(senders) % 7 or ''}@{domain}"
        if addr in seen:
            continue
        seen.add(addr)
        senders.append((f"{first} {last}", addr))
    return senders


@dataclass(frozen=True)
class PlannedMessage:
    """What one message will be; its bytes are built lazily from ``seed`` (memory stays flat)."""

    index: int
    folder: str
    date: dt.datetime
    sender: int
    alternative: bool
    attachment: bool
    seed: int


@dataclass
class Mailbox:
    """The plan of a deterministic mailbox."""

    owner: str
    senders: list[tuple[str, str]]
    messages: list[PlannedMessage]

    def by_folder(self) -> dict[str, list[PlannedMessage]]:
        """Messages per folder, oldest first (so UIDs grow with the date, as in a real mailbox)."""
        out: dict[str, list[PlannedMessage]] = {name: [] for name, _ in FOLDERS}
        for m in self.messages:
            out[m.folder].append(m)
        for msgs in out.values():
            msgs.sort(key=lambda m: (m.date, m.index))
        return out


def plan_mailbox(count: int, owner: str, *, now: dt.datetime) -> Mailbox:
    """Draw every message's parameters from ``random.Random(42)``; dates spread over 18 months before ``now``."""
    rng = random.Random(SEED)
    senders = _make_senders(rng)
    cum: list[float] = []
    total = 0.0
    for i in range(len(senders)):  # a few senders write most of the mail
        total += 1.0 / (i + 1) ** 0.8
        cum.append(total)
    names = [name for name, _ in FOLDERS]
    weights = [w for _, w in FOLDERS]
    spread = MONTHS_SPREAD * 30.44 * 86400
    messages = []
    for i in range(count):
        folder = rng.choices(names, weights)[0]
        when = now - dt.timedelta(seconds=int(rng.uniform(3600, spread)))
        sender = rng.choices(range(len(senders)), cum_weights=cum)[0]
        alternative = rng.random() < 1 / 3
        attachment = rng.random() < 0.10
        messages.append(PlannedMessage(i, folder, when, sender, alternative, attachment, rng.getrandbits(64)))
    return Mailbox(owner, senders, messages)


def _address(name: str, addr: str) -> Address:
    local, _, domain = addr.partition("@")
    return Address(display_name=name, username=local, domain=domain)


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _paragraphs(rng: random.Random, chars: int) -> list[str]:
    paras: list[str] = []
    size = 0
    while size < chars:
        para = _words(rng, rng.randint(15, 70)).capitalize() + "."
        paras.append(para)
        size += len(para) + 2
    return paras


def build_message(mailbox: Mailbox, m: PlannedMessage) -> bytes:
    """The RFC 5322 bytes of one planned message (valid MIME, CRLF line ends)."""
    rng = random.Random(m.seed)
    owner = _address(OWNER_NAME, mailbox.owner)
    peer = _address(*mailbox.senders[m.sender])
    msg = EmailMessage()
    sent = m.folder == "Sent"
    msg["From"] = owner if sent else peer
    msg["To"] = peer if sent else owner
    if rng.random() < 0.3:
        msg["Cc"] = [_address(*rng.choice(mailbox.senders)) for _ in range(rng.randint(1, 3))]
    prefix = rng.choice(("", "", "", "Re: ", "AW: ", "Fwd: "))
    msg["Subject"] = prefix + _words(rng, rng.randint(3, 9)).capitalize()
    msg["Date"] = format_datetime(m.date)
    domain = mailbox.owner.partition("@")[2] if sent else peer.domain
    msg["Message-ID"] = f"<{m.seed:016x}.{m.index}@{domain}>"
    if prefix:
        ref = f"<{rng.getrandbits(64):016x}@{rng.choice(_DOMAINS)}>"
        msg["In-Reply-To"] = ref
        msg["References"] = ref
    if m.folder == "Newsletter":
        msg["List-Unsubscribe"] = f"<mailto:unsubscribe@{peer.domain}>"
    paras = _paragraphs(rng, rng.randint(500, 3500))
    text = "\n\n".join(paras) + f"\n\n-- \n{peer.display_name}\n"
    msg.set_content(text)
    if m.alternative:
        body = "".join(f'<p style="margin:0 0 12px">{p}</p>\n' for p in paras)
        msg.add_alternative(
            f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body style="font-family:Arial">\n'
            f"{body}<p>-- <br>{peer.display_name}</p></body></html>\n",
            subtype="html",
        )
    if m.attachment:
        data = rng.randbytes(rng.randint(40_000, 60_000))
        kind = rng.choice((("application", "pdf", "pdf"), ("image", "png", "png"), ("application", "zip", "zip")))
        msg.add_attachment(data, maintype=kind[0], subtype=kind[1], filename=f"Anhang-{m.index}.{kind[2]}")
    for part in msg.walk():  # the email package draws boundaries from the global random: fix them
        if part.is_multipart():
            part.set_boundary(f"=_bench_{rng.getrandbits(64):016x}")
    return msg.as_bytes(policy=email.policy.SMTP)


_BUILD_MAILBOX: Mailbox | None = None  # set in the seeding process before its build workers fork


def _build_planned(m: PlannedMessage) -> bytes:
    assert _BUILD_MAILBOX is not None
    return build_message(_BUILD_MAILBOX, m)


# ------------------------------------------------------------------------------------------------
# Measuring child processes


@dataclass
class Measured:
    """One child process: exit status, wall time, peak RSS and what it printed."""

    returncode: int
    wall_s: float
    peak_rss_mb: float
    cpu_s: float
    stdout: str
    stderr: str
    timed_out: bool = False

    def result(self) -> dict[str, Any]:
        """The last JSON line the child printed (children print their result that way)."""
        for line in reversed(self.stdout.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"no result from child (exit {self.returncode}): {self.stderr.strip()[-2000:]}")


# Linux keeps a process's peak RSS across exec, and a child forked (or vforked) from this fat process starts
# with ours; so every tool is started by this tiny launcher (python -S, ~5 MB), which forks, execs the tool and
# reports the tool's own peak RSS, wall time and CPU time (user + system) from wait4.
_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as f:
    f.write("%d %.6f %.6f" % (usage.ru_maxrss, wall, usage.ru_utime + usage.ru_stime))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> Measured:
    """Run ``argv`` through the launcher; its wall time and peak RSS (kB from wait4) come back in a file."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as usage:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _LAUNCHER, usage.name, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=REPO,
            start_new_session=True,  # the launcher and the tool form one process group: a timeout kills both
        )
        try:
            proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            timed_out = True
        wall = time.perf_counter() - start
        fields = usage.read().split()
        peak_kb, inner_wall, cpu = (
            (int(fields[0]), float(fields[1]), float(fields[2])) if len(fields) == 3 else (0, wall, 0.0)
        )
        out.seek(0)
        err.seek(0)
        return Measured(
            returncode=proc.returncode,
            wall_s=inner_wall,
            peak_rss_mb=peak_kb / 1024,
            cpu_s=cpu,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            timed_out=timed_out,
        )


def _child_argv(kind: str, spec: dict[str, Any], *, profile: str | None = None) -> list[str]:
    prefix = [sys.executable]
    if profile:
        prefix += ["-m", "cProfile", "-o", profile]
        return [*prefix, str(Path(__file__).resolve()), "--child", kind, "--spec", json.dumps(spec)]
    return [*prefix, "-m", "bench.past_sync", "--child", kind, "--spec", json.dumps(spec)]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("DATABASE_URL", None)
    return env


# ------------------------------------------------------------------------------------------------
# The children (run in their own process)


def _ssl_context_factory(cafile: str) -> Any:
    import ssl

    def factory() -> ssl.SSLContext:
        return ssl.create_default_context(cafile=cafile)

    return factory


def child_raw(spec: dict[str, Any]) -> dict[str, Any]:
    """One TLS connection; for each folder EXAMINE, UID SEARCH ALL, then UID FETCH BODY.PEEK[] in batches."""
    from imapclient import IMAPClient

    start = time.perf_counter()
    client = IMAPClient(
        spec["host"], port=spec["port"], ssl=True, ssl_context=_ssl_context_factory(spec["cafile"])(), timeout=60
    )
    client.login(spec["user"], spec["password"])
    messages = total = folders = 0
    try:
        for flags, _delim, name in client.list_folders():
            if any(f.lower() == b"\\noselect" for f in flags):
                continue
            folders += 1
            client.select_folder(name, readonly=True)
            uids = client.search(["ALL"])
            for i in range(0, len(uids), spec["batch"]):
                resp = client.fetch(uids[i : i + spec["batch"]], [b"BODY.PEEK[]"])
                for data in resp.values():
                    total += len(data[b"BODY[]"])
                messages += len(resp)
                del resp
    finally:
        client.logout()
    return {"seconds": time.perf_counter() - start, "messages": messages, "bytes": total, "folders": folders}


def _engine_deps(spec: dict[str, Any]) -> Any:
    from models.db import make_engine
    from models.secrets import SecretBox
    from sync.engine import EngineConfig, EngineDeps
    from sync.notifier import LoggingNotifier
    from tests.support.network import LOOPBACK_POLICY

    config = EngineConfig(ssl_context=_ssl_context_factory(spec["cafile"]), outbound=LOOPBACK_POLICY)
    return EngineDeps(
        db=make_engine(spec["db"]),
        secrets=SecretBox([spec["key"]]),
        notifier=LoggingNotifier(),
        config=config,
        owner=f"bench:{os.getpid()}",
    )


def _stored(deps: Any, account_id: int) -> dict[str, int]:
    from sqlalchemy import text

    with deps.db.connect() as conn:
        msgs = conn.execute(text("SELECT count(*) FROM message WHERE account_id = :a"), {"a": account_id}).scalar()
        locs = conn.execute(
            text("SELECT count(*) FROM message_location l JOIN folder f ON f.id = l.folder_id WHERE f.account_id = :a"),
            {"a": account_id},
        ).scalar()
    return {"messages": int(msgs or 0), "locations": int(locs or 0)}


def child_past(spec: dict[str, Any]) -> dict[str, Any]:
    """The past sync: sync_account until it returns something other than MORE."""
    from sync.engine import Outcome, sync_account

    deps = _engine_deps(spec)
    start = time.perf_counter()
    slices = 0
    while True:
        slices += 1
        outcome = sync_account(deps, spec["account_id"])
        if outcome is not Outcome.MORE:
            break
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "slices": slices, "outcome": outcome.value, **_stored(deps, spec["account_id"])}


def child_nochange(spec: dict[str, Any]) -> dict[str, Any]:
    """No-change re-syncs: each one sync_account call on an account that is fully synced."""
    from sync.engine import sync_account

    deps = _engine_deps(spec)
    before = _stored(deps, spec["account_id"])
    times: list[float] = []
    outcomes: list[str] = []
    for _ in range(spec["runs"]):
        start = time.perf_counter()
        outcome = sync_account(deps, spec["account_id"])
        times.append(time.perf_counter() - start)
        outcomes.append(outcome.value)
    after = _stored(deps, spec["account_id"])
    return {"seconds": times, "outcomes": outcomes, "unchanged": before == after, **after}


CHILDREN = {"raw": child_raw, "past": child_past, "nochange": child_nochange}


# ------------------------------------------------------------------------------------------------
# Peers: mbsync and offlineimap


def mbsync_version() -> tuple[int, ...] | None:
    """isync's version, or None when mbsync is not installed."""
    exe = shutil.which("mbsync")
    if not exe:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(x) for x in m.groups() if x is not None) if m else (0,)


def write_mbsyncrc(path: Path, maildir: Path, *, port: int, user: str, password: str, cafile: str) -> None:
    """An .mbsyncrc that pulls every folder into ``maildir`` (isync 1.4 says SSLType, 1.5 renamed it TLSType)."""
    version = mbsync_version() or (0,)
    tls_key = "TLSType" if version >= (1, 5) else "SSLType"
    path.write_text(
        "\n".join(
            [
                "FSync no",  # like-for-like with SQLite in WAL mode with synchronous=NORMAL
                "",
                "IMAPAccount bench",
                "Host localhost",  # isync 1.4 checks DNS names only, not IP addresses, in the certificate
                f"Port {port}",
                f"User {user}",
                f'Pass "{password}"',
                f"{tls_key} IMAPS",
                f"CertificateFile {cafile}",
                "",
                "IMAPStore remote",
                "Account bench",
                "",
                "MaildirStore local",
                f"Path {maildir}/",
                f"Inbox {maildir}/INBOX",
                "SubFolders Verbatim",
                "",
                "Channel bench",
                "Far :remote:",
                "Near :local:",
                "Patterns *",
                "Create Near",
                "Sync Pull",
                "SyncState *",
                "",
            ]
        )
    )
    os.chmod(path, 0o600)


def write_offlineimaprc(path: Path, root: Path, *, port: int, user: str, password: str, cafile: str) -> None:
    """An offlineimap config: one connection, every folder, into a Maildir under ``root``."""
    path.write_text(
        "\n".join(
            [
                "[general]",
                "accounts = bench",
                f"metadata = {root}/metadata",
                "fsync = false",  # like-for-like with SQLite in WAL mode with synchronous=NORMAL
                "ui = quiet",
                "",
                "[Account bench]",
                "localrepository = local",
                "remoterepository = remote",
                "",
                "[Repository local]",
                "type = Maildir",
                f"localfolders = {root}/mail",
                "",
                "[Repository remote]",
                "type = IMAP",
                "remotehost = localhost",  # the certificate names localhost (and 127.0.0.1, unchecked by imaplib2)
                f"remoteport = {port}",
                f"remoteuser = {user}",
                f"remotepass = {password}",
                "ssl = yes",
                f"sslcacertfile = {cafile}",
                "maxconnections = 1",
                "readonly = True",
                "",
            ]
        )
    )
    os.chmod(path, 0o600)


def count_maildir(root: Path) -> tuple[int, int]:
    """(messages, bytes) in every cur/ and new/ below ``root``."""
    count = size = 0
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) in ("cur", "new"):
            for name in files:
                count += 1
                size += os.path.getsize(os.path.join(dirpath, name))
    return count, size


# ------------------------------------------------------------------------------------------------
# The run


@dataclass
class ToolResult:
    """One row of the table."""

    tool: str
    ok: bool
    wall_s: float | None = None
    inner_s: float | None = None
    messages: int | None = None
    bytes: int | None = None
    peak_rss_mb: float | None = None
    note: str = ""
    cpu_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def rate(self, total: int) -> float | None:
        """``total`` per second of wall time."""
        return total / self.wall_s if self.ok and self.wall_s else None


@dataclass
class SizeResult:
    """emailsync against mailbox size: the past sync and the no-change sync."""

    messages: int
    mailbox_mb: float
    past_s: float | None
    past_inner_s: float | None
    past_peak_rss_mb: float | None
    stored: int | None
    no_change_first_s: float | None
    no_change_median_s: float | None
    no_change_peak_rss_mb: float | None
    note: str = ""


class Bench:
    """Owns the Dovecot, the work directory and the results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-past-sync-"))
        self.work.mkdir(parents=True, exist_ok=True)
        from cryptography.fernet import Fernet

        self.key = Fernet.generate_key().decode()
        self.env = _child_env()
        self.server: Any = None
        self.tools: list[ToolResult] = []
        self.processes: list[ToolResult] = []  # whole processes, start-up included: the command line's figures
        self.sizes: list[SizeResult] = []
        self.mailbox_info: dict[str, Any] = {}

    # ---- set-up ----------------------------------------------------------------------------------

    def start(self) -> None:
        sys.path.insert(0, str(REPO))
        from tests.support.dovecot import start_dovecot

        self.server = start_dovecot(self.work / "dovecot")
        say(f"dovecot on 127.0.0.1:{self.server.imaps_port} (imaps), work dir {self.work}")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    def seed(self, count: int) -> tuple[str, int]:
        """Create user ``bench<count>``, seed the planned mailbox; return (user, total bytes)."""
        user = f"bench{count}"
        self.server.add_user(user, PASSWORD)
        # Dovecot's rawlog writes every session byte to disk when this directory exists: not in a benchmark.
        shutil.rmtree(self.server.rawlog_dir(user), ignore_errors=True)
        mailbox = plan_mailbox(count, f"{user}@bench.example", now=self.now)
        started = time.perf_counter()
        total = 0

        def with_sizes(raws: Iterator[bytes], msgs: list[PlannedMessage]) -> Iterator[tuple[bytes, dt.datetime]]:
            nonlocal total
            for raw, m in zip(raws, msgs, strict=True):
                total += len(raw)
                yield raw, m.date

        global _BUILD_MAILBOX
        _BUILD_MAILBOX = mailbox  # the forked workers inherit it
        folders = mailbox.by_folder()
        with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
            for folder, msgs in folders.items():
                raws = pool.imap(_build_planned, msgs, chunksize=32)
                self.server.seed_maildir(user, folder, with_sizes(raws, msgs))
        _BUILD_MAILBOX = None
        dates = [m.date for m in mailbox.messages]
        stats: dict[str, Any] = {
            "alternative": sum(m.alternative for m in mailbox.messages),
            "attachment": sum(m.attachment for m in mailbox.messages),
            "senders": len({m.sender for m in mailbox.messages}),
            "folders": {name: len(msgs) for name, msgs in folders.items()},
            "oldest": min(dates).date().isoformat() if dates else None,
            "newest": max(dates).date().isoformat() if dates else None,
        }
        say(
            f"seeded {count:,} messages, {total / 1e6:.1f} MB into {user} in {time.perf_counter() - started:.1f}s "
            f"({stats['alternative']} multipart/alternative, {stats['attachment']} with attachment, "
            f"{stats['senders']} senders, {stats['oldest']}..{stats['newest']})"
        )
        self.mailbox_info[str(count)] = {"bytes": total, **stats}
        return user, total

    def spec_imap(self, user: str) -> dict[str, Any]:
        return {
            "host": self.server.host,
            "port": self.server.imaps_port,
            "user": user,
            "password": PASSWORD,
            "cafile": str(self.server.cafile),
        }

    def add_account(self, user: str, count: int) -> dict[str, Any]:
        """A fresh SQLite database with the account connected through the real flow (untimed)."""
        from flows.accounts import AccountDraft, add_account
        from models.db import make_engine, upgrade
        from models.secrets import SecretBox
        from sync.imap_session import ImapLogin
        from tests.support.network import LOOPBACK_POLICY

        db_path = self.work / f"emailsync-{count}-{int(time.time() * 1000)}.db"
        url = f"sqlite:///{db_path}"
        engine = make_engine(url)
        try:
            upgrade(engine)
            login = ImapLogin(self.server.host, self.server.imaps_port, "tls", user, PASSWORD)
            start = (self.now.date() - dt.timedelta(days=730)).isoformat()
            draft = AccountDraft(
                team_id="TBENCH", user_id="UBENCH", email=f"{user}@bench.example", imap=login, start=start
            )
            account_id = add_account(
                engine,
                SecretBox([self.key]),
                draft,
                timeout=30,
                ssl_context=self.server.ssl_context,
                outbound=LOOPBACK_POLICY,
            )
        finally:
            engine.dispose()
        return {
            "db": url,
            "db_path": str(db_path),
            "account_id": account_id,
            "key": self.key,
            "cafile": str(self.server.cafile),
        }

    # ---- the tools -------------------------------------------------------------------------------

    def run_raw(self, user: str, *, label: str = "raw imapclient fetch") -> ToolResult:
        spec = {**self.spec_imap(user), "batch": RAW_BATCH}
        m = run_measured(_child_argv("raw", spec), timeout=self.args.timeout, env=self.env)
        if m.returncode != 0:
            return ToolResult(label, False, note=_why(m))
        r = m.result()
        return ToolResult(
            label,
            True,
            m.wall_s,
            r["seconds"],
            r["messages"],
            r["bytes"],
            m.peak_rss_mb,
            note=f"{r['folders']} folders, UID FETCH BODY.PEEK[] x{RAW_BATCH}",
            cpu_s=m.cpu_s,
        )

    def run_emailsync_past(self, account: dict[str, Any], *, profile: str | None = None) -> ToolResult:
        spec = {k: account[k] for k in ("db", "account_id", "key", "cafile")}
        m = run_measured(_child_argv("past", spec, profile=profile), timeout=self.args.timeout, env=self.env)
        if m.returncode != 0:
            return ToolResult("emailsync past sync", False, note=_why(m))
        r = m.result()
        ok = r["outcome"] == "done"
        size = os.path.getsize(account["db_path"])
        return ToolResult(
            "emailsync past sync",
            ok,
            m.wall_s,
            r["seconds"],
            r["messages"],
            None,
            m.peak_rss_mb,
            note=f"outcome {r['outcome']}, {r['slices']} slice(s), {r['locations']} locations, "
            f"SQLite {size / 1e6:.0f} MB",
            cpu_s=m.cpu_s,
            extra=r,
        )

    def run_emailsync_nochange(self, account: dict[str, Any], *, profile: str | None = None) -> ToolResult:
        spec = {**{k: account[k] for k in ("db", "account_id", "key", "cafile")}, "runs": NO_CHANGE_RUNS}
        m = run_measured(_child_argv("nochange", spec, profile=profile), timeout=self.args.timeout, env=self.env)
        if m.returncode != 0:
            return ToolResult("emailsync no-change sync", False, note=_why(m))
        r = m.result()
        times = r["seconds"]
        ok = all(o == "done" for o in r["outcomes"]) and r["unchanged"]
        r["median"] = statistics.median(times)
        return ToolResult(
            "emailsync no-change sync",
            ok,
            m.wall_s,
            times[0],
            r["messages"],
            None,
            m.peak_rss_mb,
            note="first "
            + f"{times[0]:.3f}s, median of {len(times)} {statistics.median(times):.3f}s"
            + ("" if r["unchanged"] else ", DATABASE CHANGED"),
            cpu_s=m.cpu_s,
            extra=r,
        )

    def run_mbsync(self, user: str, expected: int) -> ToolResult:
        name = "mbsync"
        if not shutil.which("mbsync"):
            return ToolResult(name, False, note="mbsync not installed (apt-get install isync)")
        root = self.work / "mbsync"
        shutil.rmtree(root, ignore_errors=True)
        (root / "mail").mkdir(parents=True)
        rc = root / "mbsyncrc"
        spec = self.spec_imap(user)
        write_mbsyncrc(rc, root / "mail", port=spec["port"], user=user, password=PASSWORD, cafile=spec["cafile"])
        m = run_measured(["mbsync", "-c", str(rc), "-a", "-q"], timeout=self.args.timeout, env=self.env)
        count, size = count_maildir(root / "mail")
        version = ".".join(map(str, mbsync_version() or ()))
        if m.returncode != 0 or count != expected:
            return ToolResult(
                name, False, m.wall_s, None, count, size, m.peak_rss_mb, note=f"{_why(m)}; got {count}/{expected}"
            )
        return ToolResult(
            name, True, m.wall_s, None, count, size, m.peak_rss_mb, note=f"isync {version}, FSync no", cpu_s=m.cpu_s
        )

    def run_offlineimap(self, user: str, expected: int) -> ToolResult:
        name = "offlineimap"
        exe = shutil.which("offlineimap") or shutil.which("offlineimap3")
        if not exe:
            return ToolResult(name, False, note="offlineimap not installed (apt-get install offlineimap3)")
        root = self.work / "offlineimap"
        shutil.rmtree(root, ignore_errors=True)
        (root / "mail").mkdir(parents=True)
        (root / "metadata").mkdir()
        rc = root / "offlineimaprc"
        spec = self.spec_imap(user)
        write_offlineimaprc(rc, root, port=spec["port"], user=user, password=PASSWORD, cafile=spec["cafile"])
        env = {k: v for k, v in self.env.items() if k != "PYTHONPATH"}
        m = run_measured([exe, "-c", str(rc), "-o", "-u", "quiet"], timeout=self.args.timeout, env=env)
        count, size = count_maildir(root / "mail")
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        if m.returncode != 0 or count != expected:
            return ToolResult(
                name, False, m.wall_s, None, count, size, m.peak_rss_mb, note=f"{_why(m)}; got {count}/{expected}"
            )
        return ToolResult(
            name,
            True,
            m.wall_s,
            None,
            count,
            size,
            m.peak_rss_mb,
            note=f"offlineimap3 {version}, maxconnections 1, fsync false",
            cpu_s=m.cpu_s,
        )

    # ---- whole processes: what an operator waits for -----------------------------------------------

    def _median_of(self, name: str, argv: list[str], env: dict[str, str], check: Any) -> ToolResult:
        """``argv`` PROCESS_RUNS times; the median wall time, and the CPU and peak RSS of that run."""
        runs = []
        for _ in range(PROCESS_RUNS):
            m = run_measured(argv, timeout=self.args.timeout, env=env)
            problem = _why(m) if m.returncode != 0 else check(m)
            if problem:
                return ToolResult(name, False, m.wall_s, note=problem)
            runs.append(m)
        runs.sort(key=lambda m: m.wall_s)
        mid = runs[len(runs) // 2]
        walls = ", ".join(f"{m.wall_s:.2f}" for m in runs)
        return ToolResult(
            name,
            True,
            mid.wall_s,
            None,
            None,
            None,
            mid.peak_rss_mb,
            note=f"median of {len(runs)}: {walls} s",
            cpu_s=mid.cpu_s,
            extra={"wall_s": [m.wall_s for m in runs], "cpu_s": [m.cpu_s for m in runs]},
        )

    def cli_env(self, account: dict[str, Any]) -> dict[str, str]:
        """The environment of `emailsync` commands on the bench's account: its database, key and Dovecot's CA."""
        from tests.support.network import LOOPBACK_SETTINGS

        data = self.work / "cli-data"
        data.mkdir(exist_ok=True)
        return {
            **self.env,
            **LOOPBACK_SETTINGS,
            "DATABASE_URL": account["db"],
            "EMAILSYNC_SECRET_KEY": account["key"],
            "EMAILSYNC_DATA_DIR": str(data),
            "SSL_CERT_FILE": account["cafile"],
        }

    def run_cli_sync_nochange(self, account: dict[str, Any]) -> ToolResult:
        """`emailsync sync` as a whole process on the fully synced account: start-up, schema check, sync."""
        before = os.path.getsize(account["db_path"])
        done = f"account {account['account_id']}: done"

        def check(m: Measured) -> str | None:
            return None if done in m.stdout else f"no '{done}' line: {m.stdout.strip()[-300:]}"

        result = self._median_of(
            "emailsync sync (no change)", [sys.executable, "-m", "bot", "sync"], self.cli_env(account), check
        )
        result.note += f"; SQLite {before / 1e6:.0f} MB"
        return result

    def run_cli_help(self, account: dict[str, Any]) -> ToolResult:
        """`emailsync --help`: the command line's start-up alone."""
        return self._median_of(
            "emailsync --help",
            [sys.executable, "-m", "bot", "--help"],
            self.cli_env(account),
            lambda m: None if "Usage: emailsync" in m.stdout else "no usage text",
        )

    def run_mbsync_nochange(self, user: str, expected: int) -> ToolResult:
        """mbsync again on the Maildir it has just pulled: its no-change sync."""
        root = self.work / "mbsync"
        argv = ["mbsync", "-c", str(root / "mbsyncrc"), "-a", "-q"]

        def check(m: Measured) -> str | None:
            count, _ = count_maildir(root / "mail")
            return None if count == expected else f"Maildir holds {count}/{expected}"

        return self._median_of("mbsync (no change)", argv, self.env, check)

    # ---- scenarios -------------------------------------------------------------------------------

    def main_mailbox(self, count: int) -> None:
        user, total = self.seed(count)
        say("warm-up: one untimed raw fetch (Dovecot indexes, page cache)")
        warm = self.run_raw(user, label="warm-up")
        if not warm.ok:
            raise RuntimeError(f"warm-up fetch failed: {warm.note}")
        account = self.add_account(user, count)
        steps: list[tuple[str, Any]] = [
            ("raw imapclient fetch", lambda: self.run_raw(user)),
            ("emailsync past sync", lambda: self.run_emailsync_past(account)),
            ("emailsync no-change sync", lambda: self.run_emailsync_nochange(account)),
        ]
        if not self.args.skip_peers:
            steps += [
                ("mbsync", lambda: self.run_mbsync(user, count)),
                ("offlineimap", lambda: self.run_offlineimap(user, count)),
            ]
        for label, step in steps:
            say(f"running {label} ... (load average {os.getloadavg()[0]:.2f})")
            try:
                result = step()
            except Exception as exc:  # a peer (or a tool) failing never stops the others
                result = ToolResult(label, False, note=f"{exc.__class__.__name__}: {exc}")
            say(
                f"  {label}: "
                + (f"{result.wall_s:.2f}s, peak RSS {result.peak_rss_mb:.0f} MB" if result.ok else "FAILED ")
                + f" {result.note}"
            )
            self.tools.append(result)
        self.record_size(count, total, self.tools[1], self.tools[2])
        process_steps: list[tuple[str, Any]] = [
            ("emailsync --help", lambda: self.run_cli_help(account)),
            ("emailsync sync (no change)", lambda: self.run_cli_sync_nochange(account)),
        ]
        mbsync = next((t for t in self.tools if t.tool == "mbsync"), None)
        if mbsync is not None and mbsync.ok:
            process_steps.append(("mbsync (no change)", lambda: self.run_mbsync_nochange(user, count)))
        for label, step in process_steps:
            say(f"running {label} x{PROCESS_RUNS} ... (load average {os.getloadavg()[0]:.2f})")
            try:
                result = step()
            except Exception as exc:
                result = ToolResult(label, False, note=f"{exc.__class__.__name__}: {exc}")
            say(f"  {label}: " + (f"{result.wall_s:.2f}s" if result.ok else "FAILED") + f" {result.note}")
            self.processes.append(result)
        if self.args.profile:
            say(f"profiling a second emailsync past sync into {self.args.profile} (timings above are unprofiled)")
            again = self.add_account(user, count)
            r = self.run_emailsync_past(again, profile=self.args.profile)
            say(f"  profiled run: {r.wall_s and round(r.wall_s, 2)}s {r.note}")
            summarize_profile(self.args.profile)
            nochange_profile = _suffixed(self.args.profile, ".nochange")
            say(f"profiling {NO_CHANGE_RUNS} no-change syncs into {nochange_profile}")
            r = self.run_emailsync_nochange(again, profile=nochange_profile)
            say(f"  profiled run: {r.note}")
            summarize_profile(nochange_profile)

    def size_mailbox(self, count: int) -> None:
        """A further mailbox size: past sync (untimed against peers) and the no-change sync."""
        user, total = self.seed(count)
        warm = self.run_raw(user, label="warm-up")
        if not warm.ok:
            self.sizes.append(SizeResult(count, total / 1e6, None, None, None, None, None, None, None, warm.note))
            return
        account = self.add_account(user, count)
        say(f"emailsync past sync of {count:,} messages ...")
        past = self.run_emailsync_past(account)
        nochange = self.run_emailsync_nochange(account) if past.ok else ToolResult("", False, note="past sync failed")
        self.record_size(count, total, past, nochange)
        say(f"  past {past.wall_s}s peak {past.peak_rss_mb} MB; no-change {nochange.note}")

    def record_size(self, count: int, total: int, past: ToolResult, nochange: ToolResult) -> None:
        self.sizes.append(
            SizeResult(
                messages=count,
                mailbox_mb=total / 1e6,
                past_s=past.wall_s if past.ok else None,
                past_inner_s=past.inner_s if past.ok else None,
                past_peak_rss_mb=past.peak_rss_mb if past.ok else None,
                stored=past.messages,
                no_change_first_s=nochange.inner_s if nochange.ok else None,
                no_change_median_s=nochange.extra.get("median") if nochange.ok else None,
                no_change_peak_rss_mb=nochange.peak_rss_mb if nochange.ok else None,
                note="" if past.ok and nochange.ok else f"{past.note} {nochange.note}".strip(),
            )
        )


def _suffixed(path: str, suffix: str) -> str:
    p = Path(path)
    return str(p.with_name(p.stem + suffix + p.suffix))


def summarize_profile(path: str, limit: int = 20) -> None:
    """The top functions of a cProfile file by own time and by cumulative time in the project, on stderr."""
    import io
    import pstats

    try:
        buf = io.StringIO()
        stats = pstats.Stats(path, stream=buf)
        stats.sort_stats("tottime").print_stats(limit)
        stats.sort_stats("cumtime").print_stats(r"/(sync|models|flows)/", limit)
        say(buf.getvalue())
    except Exception as exc:
        say(f"could not read profile {path}: {exc}")


def _why(m: Measured) -> str:
    if m.timed_out:
        return f"timed out after {m.wall_s:.0f}s"
    lines = [ln for ln in (m.stderr.strip() or m.stdout.strip()).splitlines() if ln.strip()]
    return f"exit {m.returncode}: " + (" | ".join(lines[-3:])[:400] if lines else "no output")


# ------------------------------------------------------------------------------------------------
# Report


def report(bench: Bench, count: int) -> dict[str, Any]:
    total = bench.mailbox_info[str(count)]["bytes"]
    by_tool = {t.tool: t for t in bench.tools}
    rows = []
    for t in bench.tools:
        past = t.tool != "emailsync no-change sync"
        rows.append(
            [
                t.tool,
                fmt(t.wall_s) if t.ok else "FAILED",
                fmt(t.inner_s, 3 if not past else 2) if t.ok else "-",
                fmt(t.rate(count), 0) if past else "-",
                fmt(t.rate(total) and t.rate(total) / 1e6, 1) if past else "-",  # type: ignore[operator]
                fmt(t.cpu_s) if t.ok else "-",
                fmt(t.peak_rss_mb, 0),
                t.note,
            ]
        )
    head = ["tool", "wall s", "in-process s", "msgs/s", "MB/s", "CPU s", "peak RSS MB", "note"]
    print(
        f"\nPast sync of {count:,} messages, {total / 1e6:.1f} MB, loopback Dovecot over TLS"
        f" (one run, {dt.date.today()}, load average {os.getloadavg()[0]:.2f})\n"
    )
    print(table(head, rows))

    es = by_tool.get("emailsync past sync")
    ratios: dict[str, float | None] = {}
    for peer, key in (
        ("raw imapclient fetch", "emailsync/raw"),
        ("mbsync", "emailsync/mbsync"),
        ("offlineimap", "emailsync/offlineimap"),
    ):
        other = by_tool.get(peer)
        ok = es is not None and es.ok and other is not None and other.ok and other.wall_s
        ratios[key] = es.wall_s / other.wall_s if ok else None  # type: ignore[operator,union-attr]
    raw = by_tool.get("raw imapclient fetch")
    if es is not None and es.ok and raw is not None and raw.ok and es.inner_s and raw.inner_s:
        ratios["emailsync/raw in-process"] = es.inner_s / raw.inner_s
    print("\nRatios of wall time: " + ", ".join(f"{k} = {fmt(v)}" for k, v in ratios.items()))
    print(
        "(wall s: the whole process, start-up included; in-process s: the sync itself, for the Python children;"
        " for the no-change row, in-process s is the first sync_account call; CPU s: user + system of the client"
        " process, which the machine's other load does not inflate; Dovecot's CPU is not counted)"
    )

    print(f"\nWhole processes, start-up included (median of {PROCESS_RUNS} runs each, same mailbox, same run)\n")
    process_rows = [
        [p.tool, fmt(p.wall_s) if p.ok else "FAILED", fmt(p.cpu_s) if p.ok else "-", fmt(p.peak_rss_mb, 0), p.note]
        for p in bench.processes
    ]
    print(table(["command", "wall s", "CPU s", "peak RSS MB", "note"], process_rows))
    by_process = {p.tool: p for p in bench.processes}
    cli_sync, mbsync_again = by_process.get("emailsync sync (no change)"), by_process.get("mbsync (no change)")
    if cli_sync is not None and cli_sync.ok and mbsync_again is not None and mbsync_again.ok and mbsync_again.wall_s:
        ratios["emailsync sync/mbsync, no change, whole process"] = cli_sync.wall_s / mbsync_again.wall_s  # type: ignore[operator]
        print(f"\nemailsync sync / mbsync, no change: {fmt(ratios['emailsync sync/mbsync, no change, whole process'])}")

    print("\nemailsync against mailbox size (no-change sync = one sync_account call right after the past sync)\n")
    size_rows = [
        [
            f"{s.messages:,}",
            fmt(s.mailbox_mb, 1),
            fmt(s.past_s),
            fmt(s.past_peak_rss_mb, 0),
            "-" if s.stored is None else f"{s.stored:,}",
            fmt(s.no_change_first_s, 3),
            fmt(s.no_change_median_s, 3),
            fmt(s.no_change_peak_rss_mb, 0),
            s.note,
        ]
        for s in sorted(bench.sizes, key=lambda s: s.messages)
    ]
    print(
        table(
            [
                "messages",
                "MB",
                "past sync s",
                "past peak RSS MB",
                "stored",
                "no-change s (1st)",
                "no-change s (median)",
                "no-change RSS MB",
                "note",
            ],
            size_rows,
        )
    )
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "messages": count,
        "mailbox_bytes": total,
        "mailboxes": bench.mailbox_info,
        "tools": [
            {
                **{k: v for k, v in asdict(t).items() if k != "extra"},
                "messages_per_s": t.rate(count),
                "mb_per_s": (t.rate(total) or 0) / 1e6 or None,
                "detail": t.extra,
            }
            for t in bench.tools
        ],
        "ratios": ratios,
        "processes": [asdict(p) for p in bench.processes],
        "sizes": [asdict(s) for s in bench.sizes],
        "machine": machine(),
    }
    print("\n" + json.dumps(result, indent=2, default=str))
    return result


# ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.past_sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES, help="size of the main mailbox (10000)")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_MESSAGES} messages")
    parser.add_argument("--skip-peers", action="store_true", help="do not run mbsync and offlineimap")
    parser.add_argument("--scale", action="store_true", help=f"also a {SCALE_MESSAGES:,}-message mailbox")
    parser.add_argument("--scale-messages", type=int, default=SCALE_MESSAGES, help="size used by --scale")
    parser.add_argument("--json", metavar="FILE", help="also write the JSON result to FILE")
    parser.add_argument("--profile", metavar="FILE", help="after the timed runs, cProfile a second past sync into FILE")
    parser.add_argument("--workdir", help="where Dovecot, the Maildirs and the databases go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--timeout", type=float, default=3600, help="per tool, seconds")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        import logging

        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        result = CHILDREN[args.child](json.loads(args.spec))
        print(json.dumps(result), flush=True)
        return 0

    count = QUICK_MESSAGES if args.quick else args.messages
    bench = Bench(args)
    try:
        bench.start()
        bench.main_mailbox(count)
        extra = [SMALL_MESSAGES] + ([args.scale_messages] if args.scale else [])
        for size in extra:
            if size != count:
                try:
                    bench.size_mailbox(size)
                except Exception as exc:
                    say(f"mailbox of {size} failed: {exc.__class__.__name__}: {exc}")
        result = report(bench, count)
        write_json(result, args.json)
    finally:
        bench.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
