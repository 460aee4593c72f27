"""Private, throw-away Dovecot IMAP server (no systemd, no root paths) for the test suite."""

from __future__ import annotations

import atexit
import contextlib
import grp
import itertools
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlsplit

from imapclient import IMAPClient, imap_utf7

__all__ = ["DovecotError", "DovecotServer", "start_dovecot"]

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"

# Post-login capabilities Dovecot 2.3.19 (Debian 12) advertises by default, minus
# CONDSTORE and QRESYNC; used for ``hide_condstore=True``.  (Setting
# imap_capability also changes the pre-login greeting to this list, which is fine.)
_CAPS_WITHOUT_CONDSTORE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY "
    "THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL "
    "CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 "
    "ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE "
    "SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ SPECIAL-USE"
)

_APPENDUID_RE = re.compile(rb"APPENDUID\s+(\d+)\s+(\d+)", re.IGNORECASE)
_USER_RE = re.compile(r"[A-Za-z0-9_@+-][A-Za-z0-9._@+-]*")
_UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes; sockets live up to ~30 chars below base_dir
_SEED_SEQ = itertools.count()  # process-wide, keeps seeded file names unique and ordered
_LIVE_SERVERS: set[DovecotServer] = set()


class DovecotError(RuntimeError):
    """Dovecot failed to start, or a doveadm/IMAP helper operation failed."""


@dataclass(eq=False)
class DovecotServer:
    """A running private Dovecot instance; everything it writes lives under ``base_dir``.

    Users authenticate against one JSON file per user (``auth/passdb/<user>``, read afresh
    on every login); all mailboxes belong to one system uid (``mail`` when running as
    root, else the current user); mail is Maildir with ``LAYOUT=fs`` and ``/`` as the
    hierarchy separator, so ``"Projects.2026"`` is a single folder.
    """

    base_dir: Path
    host: str
    imaps_port: int
    imap_port: int
    cafile: Path
    config_path: Path = field(repr=False)
    run_dir: Path = field(repr=False)
    log_path: Path = field(repr=False)
    mail_uid: int = field(repr=False)
    mail_gid: int = field(repr=False)
    auth_gid: int = field(repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _own_run_dir: bool = field(default=False, repr=False)
    #: The OAuth 2.0 passdb settings when started with ``oauth2=`` (XOAUTH2 / OAUTHBEARER logins), else None.
    oauth2: OAuth2Passdb | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ paths
    @property
    def users_dir(self) -> Path:
        """Directory holding one JSON passdb record per user."""
        return self.base_dir / "auth" / "passdb"

    def home(self, user: str) -> Path:
        """Home directory of ``user``."""
        return self.base_dir / "home" / user

    def maildir(self, user: str) -> Path:
        """Root of ``user``'s Maildir; with LAYOUT=fs this directory is INBOX."""
        return self.home(user) / "Maildir"

    def folder_path(self, user: str, folder: str) -> Path:
        """On-disk Maildir directory of ``folder`` (each level modified-UTF-7 encoded)."""
        path = self.maildir(user)
        if folder.upper() == "INBOX":
            return path
        for part in folder.split("/"):
            if part in ("", ".", "..", "cur", "new", "tmp"):
                raise ValueError(f"unsupported folder name {folder!r}")
            path = path / imap_utf7.encode(part).decode("ascii")
        return path

    def rawlog_dir(self, user: str) -> Path:
        """Directory where Dovecot's rawlog writes ``user``'s IMAP sessions (``*.in`` / ``*.out``)."""
        return self.base_dir / "rawlog" / user

    # -------------------------------------------------------------------- TLS
    def ssl_context(self) -> ssl.SSLContext:
        """Client context trusting only this server's self-signed certificate (valid for 127.0.0.1 and localhost)."""
        ctx = ssl.create_default_context(cafile=str(self.cafile))
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    # ------------------------------------------------------------------ users
    def add_user(self, name: str, password: str) -> None:
        """Create a user (home and rawlog directories included); usable immediately."""
        _check_user_name(name)
        if self._passdb_file(name).exists():
            raise ValueError(f"user {name!r} already exists")
        for d in (self.home(name), self.rawlog_dir(name)):
            d.mkdir(parents=True, exist_ok=True)
            self._own(d, 0o700)
        self._write_password(name, password)

    def set_password(self, name: str, password: str) -> None:
        """Change a user's password; the next login (even within the same second) sees it."""
        _check_user_name(name)
        if not self._passdb_file(name).exists():
            raise KeyError(name)
        self._write_password(name, password)

    def _passdb_file(self, name: str) -> Path:
        return self.users_dir / name

    def _write_password(self, name: str, password: str) -> None:
        if any(ch in password for ch in "\r\n\0"):
            raise ValueError("password must not contain CR, LF or NUL")
        path = self._passdb_file(name)
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(json.dumps({"password": "{PLAIN}" + password}), encoding="utf-8")
        if os.geteuid() == 0:
            os.chown(tmp, 0, self.auth_gid)
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)

    def add_mailbox(self, name: str) -> None:
        """Create a user without a password (home and rawlog directories only): for OAuth 2.0 logins.

        With ``oauth2=`` the token decides who may log in, and Dovecot creates the home of a user it has
        not seen at the first login; this creates it ahead of time (to seed mail before that login) along
        with the rawlog directory, which Dovecot does not create. Idempotent.
        """
        _check_user_name(name)
        for d in (self.home(name), self.rawlog_dir(name)):
            if not d.is_dir():
                d.mkdir(parents=True, exist_ok=True)
                self._own(d, 0o700)

    def oauth2_client(self, user: str, access_token: str, *, mech: str = "XOAUTH2") -> IMAPClient:
        """An IMAPClient logged in with a bearer token (``mech`` XOAUTH2 or OAUTHBEARER) over implicit TLS."""
        c = IMAPClient(self.host, port=self.imaps_port, ssl=True, ssl_context=self.ssl_context(), timeout=10)
        try:
            if mech.upper() == "OAUTHBEARER":
                c.oauthbearer_login(user, access_token)
            else:
                c.oauth2_login(user, access_token, mech=mech)
        except BaseException:
            c.shutdown()
            raise
        return c

    # ------------------------------------------------------------------- IMAP
    def client(self, user: str, password: str) -> IMAPClient:
        """A logged-in IMAPClient over implicit TLS on the imaps port (timeout 10 s)."""
        c = IMAPClient(self.host, port=self.imaps_port, ssl=True, ssl_context=self.ssl_context(), timeout=10)
        try:
            c.login(user, password)
        except BaseException:
            c.shutdown()
            raise
        return c

    def create_folder(self, user: str, password: str, name: str) -> None:
        """Create folder ``name`` over IMAP (``/`` separates hierarchy levels)."""
        c = self.client(user, password)
        try:
            c.create_folder(name)
        finally:
            c.logout()

    def append(
        self,
        user: str,
        password: str,
        folder: str,
        raw: bytes,
        flags: Sequence[bytes | str] = (),
        internal_date: datetime | None = None,
    ) -> int:
        """APPEND ``raw`` to ``folder`` over IMAP; return the new UID (from APPENDUID)."""
        c = self.client(user, password)
        try:
            resp = c.append(folder, raw, flags=tuple(flags), msg_time=internal_date)
        finally:
            c.logout()
        if isinstance(resp, str):
            resp = resp.encode()
        m = _APPENDUID_RE.search(resp)
        if not m:
            raise DovecotError(f"no APPENDUID in APPEND response: {resp!r}")
        return int(m.group(2))

    # ---------------------------------------------------------------- Maildir
    def seed_maildir(self, user: str, folder: str, messages: Iterable[tuple[bytes, datetime]]) -> None:
        """Bulk-write messages straight into ``folder``'s Maildir (folder and parents created if needed).

        INTERNALDATE comes from the file mtime (naive datetimes are local time).  Dovecot
        notices the files on the next SELECT/STATUS/LIST and assigns UIDs in iteration order.
        About 10,000 small messages per second.
        """
        root = self.maildir(user)
        target = self.folder_path(user, folder)
        levels = [root]  # every level is a mailbox of its own with LAYOUT=fs
        for i in range(len(target.relative_to(root).parts)):
            levels.append(root.joinpath(*target.relative_to(root).parts[: i + 1]))
        for level in levels:
            for d in (level, level / "cur", level / "new", level / "tmp"):
                if not d.is_dir():
                    d.mkdir(parents=True, exist_ok=True)
                    self._own(d, 0o700)
        tmp_dir = str(target / "tmp")
        cur_dir = str(target / "cur")
        chown = os.geteuid() == 0
        uid, gid = self.mail_uid, self.mail_gid
        pid = os.getpid()
        base = int(time.time())
        first: int | None = None
        open_flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        for raw, when in messages:
            n = next(_SEED_SEQ)
            if first is None:
                first = n
            # Dovecot sorts newly seen files by "<secs>.M<usecs>" before assigning
            # UIDs, so the seeding order is encoded there.
            secs, usecs = divmod(n - first, 1_000_000)
            name = f"{base + secs}.M{usecs}P{pid}Q{n}.seed,S={len(raw)}:2,"
            tmp_path = f"{tmp_dir}/{name}"
            mtime_ns = int(when.timestamp() // 1) * 1_000_000_000
            fd = os.open(tmp_path, open_flags, 0o600)
            try:
                view = memoryview(raw)
                while view:
                    view = view[os.write(fd, view) :]
                if chown:
                    os.fchown(fd, uid, gid)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)
            os.rename(tmp_path, f"{cur_dir}/{name}")

    # --------------------------------------------------------------- doveadm
    def doveadm(self, *args: str) -> str:
        """Run ``doveadm -c <our config> ARGS``; return stdout, raise DovecotError on failure."""
        res = subprocess.run([DOVEADM, "-c", str(self.config_path), *args], capture_output=True, timeout=60)
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip()
            raise DovecotError(f"doveadm {' '.join(args)} failed (exit {res.returncode}): {err}")
        return res.stdout.decode("utf-8", errors="replace")

    def update_mailbox(
        self,
        user: str,
        folder: str,
        *,
        uid_validity: int | None = None,
        min_next_uid: int | None = None,
        min_highest_modseq: int | None = None,
    ) -> None:
        """Set a folder's UIDVALIDITY, or raise its UIDNEXT and HIGHESTMODSEQ (``doveadm mailbox update``).

        Dovecot 2.3.19 limits: UIDNEXT must fit in 32 bits, so the highest UID it assigns is 2^32-2
        (an APPEND that would take 2^32-1 kills the imap process), and a STORE on UID 2^32-2 trips an
        assertion too; HIGHESTMODSEQ is not capped at RFC 7162's 2^63-1 (a change at 2^63-1 reports 2^63).
        """
        args: list[str] = []
        if uid_validity is not None:
            args += ["--uid-validity", str(uid_validity)]
        if min_next_uid is not None:
            args += ["--min-next-uid", str(min_next_uid)]
        if min_highest_modseq is not None:
            args += ["--min-highest-modseq", str(min_highest_modseq)]
        if not args:
            raise ValueError("nothing to update")
        self.doveadm("mailbox", "update", "-u", user, *args, folder)

    # ------------------------------------------------------------- lifecycle
    @property
    def pid(self) -> int | None:
        """PID of the dovecot master process (None once stopped); it leads its own session."""
        return self._proc.pid if self._proc is not None else None

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the Dovecot log file and of the master's stderr."""
        return f"{_tail(self.log_path, lines)}\n{_tail(self.base_dir / 'dovecot.stderr', lines)}"

    def stop(self) -> None:
        """Stop the master and every process it spawned (takes ~30 ms). Idempotent."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        _LIVE_SERVERS.discard(self)
        if proc.poll() is None:
            # A plain SIGTERM makes the master SIGQUIT its remaining children and then
            # sleep a hard-coded 1 s (up to 6 s).  Instead: freeze the master and its
            # children (so nothing can respawn or reconnect), SIGKILL the children --
            # the log process last, once it has written what it was sent -- then let
            # the master handle SIGTERM: it reaps them and exits in a few ms.
            _signal(proc.pid, signal.SIGSTOP)
            try:
                children = [p for p in _session_members(proc.pid) if p != proc.pid]
                loggers = [p for p in children if _cmdline(p).endswith("/log")]
                others = [p for p in children if p not in loggers]
                for child in others:
                    _signal(child, signal.SIGSTOP)
                for child in others:
                    _signal(child, signal.SIGKILL)
                _wait_gone(proc.pid, others)
                time.sleep(0.01)
                for child in loggers:
                    _signal(child, signal.SIGKILL)
                _wait_gone(proc.pid, loggers)
            finally:
                _signal(proc.pid, signal.SIGTERM)
                _signal(proc.pid, signal.SIGCONT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        leftovers = _session_members(proc.pid)
        for p in leftovers:
            _signal(p, signal.SIGKILL)
        _wait_gone(proc.pid, leftovers)
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _own(self, path: Path, mode: int) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.mail_uid, self.mail_gid)
        os.chmod(path, mode)


# --------------------------------------------------------------------- helpers
def _check_user_name(name: str) -> None:
    if not _USER_RE.fullmatch(name):
        raise ValueError(f"unsupported user name {name!r}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _session_members(sid: int) -> list[int]:
    """PIDs of live (non-zombie) processes in session ``sid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()  # state ppid pgrp session ...
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != b"Z":
            found.append(int(entry))
    return found


def _wait_gone(sid: int, pids: list[int], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        alive = set(_session_members(sid))
        pids = [p for p in pids if p in alive]
        if pids:
            time.sleep(0.002)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _make_traversable(path: Path) -> None:
    """Give "others" +x on ``path`` and its ancestors (root only).

    Dovecot's unprivileged processes (mail uid, dovecot, dovenull) must reach files
    below ``base_dir``; pytest creates /tmp/pytest-of-root/... with mode 0700.
    """
    for p in [path, *path.parents]:
        st = p.stat()
        if not st.st_mode & 0o001:
            os.chmod(p, (st.st_mode & 0o7777) | 0o001)


def _make_cert(cert_dir: Path) -> tuple[Path, Path]:
    cert, key = cert_dir / "cert.pem", cert_dir / "key.pem"
    # EC instead of RSA: key generation is instant.
    cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    cmd += ["-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    cmd += ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        cmd,
        check=True,
        capture_output=True,
        timeout=60,
    )
    os.chmod(key, 0o600)
    os.chmod(cert, 0o644)
    return cert, key


def _render_config(
    *,
    base_dir: Path,
    run_dir: Path,
    log_path: Path,
    cert: Path,
    key: Path,
    host: str,
    imap_port: int,
    imaps_port: int,
    mail_uid: int,
    mail_gid: int,
    login_user: str,
    internal_user: str,
    root: bool,
    passdb_conf: Path,
    hide_condstore: bool,
    oauth2_conf: Path | None = None,
) -> str:
    dh = Path("/usr/share/dovecot/dh.pem")
    no_chroot = [] if root else ["  chroot ="]
    lines = [
        "# Generated by tests/support/dovecot.py -- private test instance",
        f"base_dir = {run_dir}",
        f"state_dir = {base_dir / 'state'}",
        f"instance_name = dovecot-test-{imaps_port}",
        f"log_path = {log_path}",
        f"info_log_path = {log_path}",
        f"debug_log_path = {log_path}",
        "protocols = imap",
        f"listen = {host}",
        "shutdown_clients = yes",
        f"default_login_user = {login_user}",
        f"default_internal_user = {internal_user}",
        *([] if root else [f"default_internal_group = {grp.getgrgid(mail_gid).gr_name}"]),
        # mail runs as uid 8 ("mail") under root; dovecot refuses uids below first_valid_uid
        f"first_valid_uid = {1 if root else mail_uid}",
        f"first_valid_gid = {1 if root else mail_gid}",
        "",
        "ssl = yes",
        f"ssl_cert = <{cert}",
        f"ssl_key = <{key}",
        "ssl_min_protocol = TLSv1.2",
        *([f"ssl_dh = <{dh}"] if dh.exists() else []),
        "disable_plaintext_auth = no",
        "auth_mechanisms = plain login",
        "auth_username_format = %u",  # default %Lu would lowercase "Alice"
        "auth_failure_delay = 0",
        "auth_cache_size = 0",
        "auth_verbose = yes",
        *(_oauth2_auth_lines(oauth2_conf) if oauth2_conf is not None else []),
        "",
        # passwd-file only re-reads its file when the mtime (seconds) or size changed
        # and at most once per second, so add_user/set_password would not be seen
        # immediately.  The dict "fs" driver reads auth/passdb/<user> on every login.
        "passdb {",
        "  driver = dict",
        f"  args = {passdb_conf}",
        *(["  mechanisms = plain login"] if oauth2_conf is not None else []),  # a token is no password
        "  result_failure = continue-fail",
        "}",
        # Catch-all that never lets anyone in: it "succeeds" only to attach the
        # nodelay field (fields of failed passdbs are rolled back) and then turns
        # the result into a failure.  Without it every failed login is answered
        # only by auth's 0.5 s failure-flush timer, even with auth_failure_delay = 0.
        "passdb {",
        "  driver = static",
        "  args = nopassword=y nodelay=y",
        "  result_success = return-fail",
        "}",
        "userdb {",
        "  driver = static",
        f"  args = uid={mail_uid} gid={mail_gid} home={base_dir / 'home'}/%u",
        "}",
        "",
        # LAYOUT=fs: hierarchy separator on disk is "/", so dots are ordinary characters.
        "mail_location = maildir:~/Maildir:LAYOUT=fs",
        # The list index would cache STATUS and the folder list and miss seed_maildir().
        "mailbox_list_index = no",
        "mail_fsync = never",
        "namespace inbox {",
        "  inbox = yes",
        "  separator = /",
        "  prefix =",
        *[
            line
            for name in ("Sent", "Trash", "Junk", "Drafts")
            for line in (f"  mailbox {name} {{", f"    special_use = \\{name}", "    auto = no", "  }")
        ],
        "}",
        "",
        "protocol imap {",
        f"  rawlog_dir = {base_dir / 'rawlog'}/%u",
        "  mail_max_userip_connections = 100",
        # IDLE learns of new mail through inotify, but fs.inotify.max_user_instances (128 per uid by default,
        # shared by every Dovecot on the machine running as that uid) runs out under many watches; Dovecot
        # then falls back to this check interval (default 30 s), which would make IDLE tests flaky.
        "  mailbox_idle_check_interval = 1 secs",
        *([f"  imap_capability = {_CAPS_WITHOUT_CONDSTORE}"] if hide_condstore else []),
        "}",
        "",
        "service imap-login {",
        "  inet_listener imap {",
        f"    address = {host}",
        f"    port = {imap_port}",
        "  }",
        "  inet_listener imaps {",
        f"    address = {host}",
        f"    port = {imaps_port}",
        "    ssl = yes",
        "  }",
        "  service_count = 0",
        "  process_min_avail = 1",
        "  process_limit = 10",
        "  client_limit = 500",
        *no_chroot,
        "}",
        "service imap {",
        "  process_limit = 500",
        "}",
        # Without the anvil-auth-penalty socket the auth penalty (2..15 s delay of the
        # next login from the same IP after a failed one) is disabled.
        "service anvil {",
        "  unix_listener anvil-auth-penalty {",
        "    mode = 0",
        "  }",
        *no_chroot,
        "}",
    ]
    if not root:
        lines += ["service auth-worker {", "  user = $default_internal_user", "}"]
    return "\n".join(lines) + "\n"


def _dict_passdb_conf(auth_dir: Path) -> str:
    return (
        f"uri = fs:posix:prefix={auth_dir}/\n"
        "default_pass_scheme = PLAIN\n"
        "iterate_disable = yes\n"
        "key passdb {\n"
        "  key = passdb/%u\n"
        "  format = json\n"
        "}\n"
        "passdb_objects = passdb\n"
    )


# ----------------------------------------------------------------- OAuth 2.0
class _IntrospectionSource(Protocol):
    """What :meth:`OAuth2Passdb.for_server` reads from ``tests.support.oauth_server.OAuthServer``."""

    @property
    def introspection(self) -> Any: ...  # .url, .client_id, .client_secret

    @property
    def imap_scope(self) -> str: ...

    @property
    def discovery_url(self) -> str: ...

    @property
    def cafile(self) -> Path | None: ...


@dataclass(frozen=True)
class OAuth2Passdb:
    """Dovecot's ``oauth2`` passdb (XOAUTH2 and OAUTHBEARER) validating tokens by RFC 7662 introspection.

    Dovecot POSTs ``token=<bearer>`` (``mode="post"``; ``"auth"`` sends it as ``Authorization: Bearer`` in a
    GET) to ``introspection_url``, with HTTP Basic ``client_id:client_secret``, and lets the login in when
    the answer has ``"active": true``, ``username_attribute`` equal to the login name (case kept), and
    ``scope`` containing ``scope`` (if set). Build it from a running test provider with :meth:`for_server`.

    ``auth_cache_size = 0`` (already set for the password users) matters here: with a cache, an expired or
    revoked token keeps logging in until the cache entry ages out.
    """

    introspection_url: str
    client_id: str = ""
    client_secret: str = ""
    mode: Literal["post", "auth", "get"] = "post"
    username_attribute: str = "username"
    #: A single scope the token must have (Dovecot checks the introspection answer's ``scope``).
    scope: str | None = None
    #: Advertised to OAUTHBEARER clients in the error answer (RFC 7628).
    openid_configuration_url: str | None = None
    #: CA to trust for an ``https`` introspection URL.
    ca_file: Path | None = None
    timeout_msecs: int = 10_000
    #: Dovecot logs every introspection request and answer (tokens included) to the instance's log.
    debug: bool = False

    @classmethod
    def for_server(cls, server: _IntrospectionSource, **overrides: Any) -> OAuth2Passdb:
        """Settings for a running ``tests.support.oauth_server.OAuthServer``: its introspection endpoint and
        resource-server credentials, its IMAP scope (pass ``scope=None`` to accept any) and discovery URL."""
        settings: dict[str, Any] = {
            "introspection_url": server.introspection.url,
            "client_id": server.introspection.client_id,
            "client_secret": server.introspection.client_secret,
            "scope": server.imap_scope,
            "openid_configuration_url": server.discovery_url,
            "ca_file": server.cafile,
        }
        settings.update(overrides)
        return cls(**settings)


def _oauth2_auth_lines(oauth2_conf: Path) -> list[str]:
    """Lines for dovecot.conf: the mechanisms (overriding the earlier ``auth_mechanisms``) and the oauth2
    passdb, placed before the password passdbs.

    A failed token check continues (as a failure) to the static catch-all passdb, which attaches
    ``nodelay`` so the failure is answered at once; the dict passdb only serves PLAIN and LOGIN.
    """
    return [
        "auth_mechanisms = plain login xoauth2 oauthbearer",
        "passdb {",
        "  driver = oauth2",
        "  mechanisms = xoauth2 oauthbearer",
        f"  args = {oauth2_conf}",
        "  result_failure = continue-fail",
        "}",
    ]


def _oauth2_conf_text(settings: OAuth2Passdb) -> str:
    url = settings.introspection_url
    if settings.client_id:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        url = parts._replace(
            netloc=f"{quote(settings.client_id, safe='')}:{quote(settings.client_secret, safe='')}@{netloc}"
        ).geturl()
    lines = [
        "# Generated by tests/support/dovecot.py -- oauth2 passdb of a private test instance",
        f"introspection_mode = {settings.mode}",
        f"introspection_url = {url}",
        "force_introspection = yes",
        f"username_attribute = {settings.username_attribute}",
        "username_format = %u",  # like auth_username_format: no lowercasing
        "active_attribute = active",
        "active_value = true",
        f"timeout_msecs = {settings.timeout_msecs}",
        f"debug = {'yes' if settings.debug else 'no'}",
    ]
    if settings.scope:
        lines.append(f"scope = {settings.scope}")
    if settings.openid_configuration_url:
        lines.append(f"openid_configuration_url = {settings.openid_configuration_url}")
    if settings.ca_file is not None:
        lines.append(f"tls_ca_cert_file = {settings.ca_file}")
    return "\n".join(lines) + "\n"


def _write_oauth2_conf(auth_dir: Path, settings: OAuth2Passdb, auth_gid: int) -> Path:
    """Write dovecot-oauth2.conf.ext (it holds the introspection secret: root:dovecot 0640 as root)."""
    path = auth_dir / "dovecot-oauth2.conf.ext"
    path.write_text(_oauth2_conf_text(settings), encoding="utf-8")
    if os.geteuid() == 0:
        os.chown(path, 0, auth_gid)
    os.chmod(path, 0o640)
    return path


__all__ += ["OAuth2Passdb"]


def start_dovecot(base_dir: Path, *, hide_condstore: bool = False, oauth2: OAuth2Passdb | None = None) -> DovecotServer:
    """Start a private Dovecot (IMAP only) on two free 127.0.0.1 ports and wait until it greets.

    ``hide_condstore=True`` removes CONDSTORE and QRESYNC from the advertised capabilities.
    ``oauth2=OAuth2Passdb(...)`` also lets users log in with XOAUTH2 / OAUTHBEARER bearer tokens, checked
    against an authorization server's introspection endpoint (see :class:`OAuth2Passdb`); password
    logins keep working as before.
    As root, parents of ``base_dir`` get o+x so Dovecot's unprivileged processes can reach it.
    """
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    root = os.geteuid() == 0
    host = "127.0.0.1"
    if root:
        mail = pwd.getpwnam("mail")
        mail_uid, mail_gid = mail.pw_uid, mail.pw_gid
        login_user, internal_user = "dovenull", "dovecot"
        auth_gid = grp.getgrnam("dovecot").gr_gid
        _make_traversable(base_dir)
    else:
        mail_uid, mail_gid = os.getuid(), os.getgid()
        login_user = internal_user = pwd.getpwuid(mail_uid).pw_name
        auth_gid = mail_gid

    os.chmod(base_dir, 0o755)
    for sub in ("home", "rawlog", "state", "tls", "auth"):
        (base_dir / sub).mkdir(exist_ok=True)
        os.chmod(base_dir / sub, 0o755)
    passdb_dir = base_dir / "auth" / "passdb"
    passdb_dir.mkdir(exist_ok=True)
    if root:
        os.chown(passdb_dir, 0, auth_gid)
    os.chmod(passdb_dir, 0o750)
    passdb_conf = base_dir / "auth" / "dict-passdb.conf.ext"
    passdb_conf.write_text(_dict_passdb_conf(base_dir / "auth"))
    os.chmod(passdb_conf, 0o644)
    oauth2_conf = _write_oauth2_conf(base_dir / "auth", oauth2, auth_gid) if oauth2 is not None else None

    run_dir = base_dir / "run"
    own_run_dir = len(str(run_dir)) > _UNIX_SOCKET_MAX - 30
    if own_run_dir:  # socket paths would get too long
        run_dir = Path(tempfile.mkdtemp(prefix="dovecot-", dir="/tmp"))
    run_dir.mkdir(exist_ok=True)
    os.chmod(run_dir, 0o755)

    cert, key = _make_cert(base_dir / "tls")
    log_path = base_dir / "dovecot.log"
    config_path = base_dir / "dovecot.conf"

    last_err = ""
    for _attempt in range(3):  # a port picked below may get taken before dovecot binds it
        imap_port = _free_port(host)
        imaps_port = _free_port(host)
        while imaps_port == imap_port:
            imaps_port = _free_port(host)
        config_path.write_text(
            _render_config(
                base_dir=base_dir,
                run_dir=run_dir,
                log_path=log_path,
                cert=cert,
                key=key,
                host=host,
                imap_port=imap_port,
                imaps_port=imaps_port,
                mail_uid=mail_uid,
                mail_gid=mail_gid,
                login_user=login_user,
                internal_user=internal_user,
                root=root,
                passdb_conf=passdb_conf,
                hide_condstore=hide_condstore,
                oauth2_conf=oauth2_conf,
            )
        )
        server = DovecotServer(
            base_dir=base_dir,
            host=host,
            imaps_port=imaps_port,
            imap_port=imap_port,
            cafile=cert,
            config_path=config_path,
            run_dir=run_dir,
            log_path=log_path,
            mail_uid=mail_uid,
            mail_gid=mail_gid,
            auth_gid=auth_gid,
            oauth2=oauth2,
        )
        with open(base_dir / "dovecot.stderr", "ab") as stderr:
            server._proc = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,  # its session id == its pid: lets stop() find every child
            )
        _LIVE_SERVERS.add(server)
        last_err = _wait_ready(server) or ""
        if not last_err:
            server._own_run_dir = own_run_dir
            return server
        server.stop()
        if "Address already in use" not in server.log_tail():
            break
    if own_run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    raise DovecotError(f"dovecot did not become ready: {last_err}\n--- log tail ---\n{_tail(log_path)}")


def _wait_ready(server: DovecotServer, timeout: float = 10.0) -> str | None:
    """None once the imaps port greets with "* OK" over verified TLS, else an error description."""
    deadline = time.monotonic() + timeout
    ctx = server.ssl_context()
    err = "timeout"
    while time.monotonic() < deadline:
        proc = server._proc
        if proc is None or proc.poll() is not None:
            status = proc.returncode if proc else "?"
            return f"dovecot exited with status {status}: {_tail(server.base_dir / 'dovecot.stderr')}"
        try:
            with (
                socket.create_connection((server.host, server.imaps_port), timeout=2) as raw,
                ctx.wrap_socket(raw, server_hostname=server.host) as s,
            ):
                greeting = s.recv(4096)
            if greeting.startswith(b"* OK"):
                return None
            err = f"unexpected greeting {greeting!r}"
        except (OSError, ssl.SSLError) as e:
            err = repr(e)
        time.sleep(0.05)
    return err


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE_SERVERS):
        with contextlib.suppress(Exception):
            server.stop()
