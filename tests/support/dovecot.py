"""Private, throw-away Dovecot IMAP server (no systemd, no root paths) for the test suite."""

from __future__ import annotations

import atexit
import grp
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

from imapclient import IMAPClient, imap_utf7

__all__ = ["DovecotError", "DovecotServer", "start_dovecot"]

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"

# Post-login capabilities advertised by Dovecot 2.3.19 (Debian 12) by default,
# minus CONDSTORE and QRESYNC.  Used for ``hide_condstore=True``.
_CAPS_WITHOUT_CONDSTORE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY "
    "THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL "
    "CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 "
    "ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE "
    "SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ SPECIAL-USE"
)

_APPENDUID_RE = re.compile(rb"APPENDUID\s+(\d+)\s+(\d+)", re.IGNORECASE)
_UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes; leave room for "login/imap-urlauth" etc.
_LIVE_SERVERS: set[DovecotServer] = set()


class DovecotError(RuntimeError):
    """Dovecot failed to start, or a doveadm command failed."""


@dataclass(eq=False)
class DovecotServer:
    """A running private Dovecot instance; every path it uses lives under ``base_dir``."""

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
    _seed_counter: int = field(default=0, repr=False)

    # ------------------------------------------------------------------ paths
    @property
    def users_dir(self) -> Path:
        """Directory holding one JSON passdb record per user (read fresh on every login)."""
        return self.base_dir / "auth" / "passdb"

    def home(self, user: str) -> Path:
        """Home directory of ``user`` (its Maildir is ``home/Maildir``)."""
        return self.base_dir / "home" / user

    def maildir(self, user: str) -> Path:
        """Root of ``user``'s Maildir (LAYOUT=fs; this directory is INBOX)."""
        return self.home(user) / "Maildir"

    def rawlog_dir(self, user: str) -> Path:
        """Directory where Dovecot's rawlog writes ``user``'s IMAP sessions (``*.in``/``*.out``)."""
        return self.base_dir / "rawlog" / user

    # -------------------------------------------------------------------- TLS
    def ssl_context(self) -> ssl.SSLContext:
        """Client context trusting only this server's self-signed certificate."""
        ctx = ssl.create_default_context(cafile=str(self.cafile))
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    # ------------------------------------------------------------------ users
    def add_user(self, name: str, password: str) -> None:
        """Create a user; usable immediately (no restart, no reload)."""
        _check_user_name(name)
        if self._passdb_file(name).exists():
            raise ValueError(f"user {name!r} already exists")
        home = self.home(name)
        home.mkdir(parents=True, exist_ok=True)
        self._own(home, 0o700)
        raw = self.rawlog_dir(name)
        raw.mkdir(parents=True, exist_ok=True)
        self._own(raw, 0o700)
        self._write_password(name, password)

    def set_password(self, name: str, password: str) -> None:
        """Change a user's password; effective for the next login."""
        _check_user_name(name)
        if not self._passdb_file(name).exists():
            raise KeyError(name)
        self._write_password(name, password)

    def _passdb_file(self, name: str) -> Path:
        return self.users_dir / name

    def _write_password(self, name: str, password: str) -> None:
        if "\n" in password or "\r" in password or "\0" in password:
            raise ValueError("password must not contain CR, LF or NUL")
        path = self._passdb_file(name)
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(json.dumps({"password": "{PLAIN}" + password}), encoding="utf-8")
        if os.geteuid() == 0:
            os.chown(tmp, 0, self.auth_gid)
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)

    # ------------------------------------------------------------------- IMAP
    def client(self, user: str, password: str) -> IMAPClient:
        """A logged-in IMAPClient over implicit TLS (imaps port), timeout 10 s."""
        c = IMAPClient(self.host, port=self.imaps_port, ssl=True, ssl_context=self.ssl_context(), timeout=10)
        try:
            c.login(user, password)
        except BaseException:
            c.shutdown()
            raise
        return c

    def create_folder(self, user: str, password: str, name: str) -> None:
        """Create folder ``name`` (``/`` is the hierarchy separator) over IMAP."""
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
        """APPEND ``raw`` to ``folder`` over IMAP and return the new UID (from APPENDUID)."""
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
    def folder_path(self, user: str, folder: str) -> Path:
        """On-disk Maildir directory of ``folder`` (modified UTF-7 per hierarchy level)."""
        path = self.maildir(user)
        if folder.upper() == "INBOX":
            return path
        for part in folder.split("/"):
            if part in ("", ".", "..", "cur", "new", "tmp"):
                raise ValueError(f"unsupported folder name {folder!r}")
            path = path / imap_utf7.encode(part).decode("ascii")
        return path

    def seed_maildir(self, user: str, folder: str, messages: Iterable[tuple[bytes, datetime]]) -> None:
        """Bulk-write messages straight into ``folder``'s Maildir (created if needed).

        INTERNALDATE is taken from the file mtime (naive datetimes are local time).
        UIDs are assigned by Dovecot on the next SELECT/STATUS, in iteration order.
        """
        root = self.maildir(user)
        target = self.folder_path(user, folder)
        # Create every level down to the folder (each level is a mailbox in LAYOUT=fs).
        levels = [root]
        if target != root:
            rel = target.relative_to(root)
            for i in range(len(rel.parts)):
                levels.append(root.joinpath(*rel.parts[: i + 1]))
        for d in levels:
            for sub in ("", "cur", "new", "tmp"):
                p = d / sub if sub else d
                if not p.is_dir():
                    p.mkdir(parents=True, exist_ok=True)
                    self._own(p, 0o700)
        tmp_dir = str(target / "tmp")
        cur_dir = str(target / "cur")
        chown = os.geteuid() == 0
        uid, gid = self.mail_uid, self.mail_gid
        pid = os.getpid()
        base = int(time.time())
        n = self._seed_counter
        flags_w = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        for raw, when in messages:
            # Dovecot sorts new files by "<secs>.M<usecs>" before assigning UIDs,
            # so encode the seeding order there.
            secs, usecs = divmod(n, 1_000_000)
            name = f"{base + secs}.M{usecs}P{pid}Q{n}.seed,S={len(raw)}:2,"
            n += 1
            tmp_path = f"{tmp_dir}/{name}"
            ts_ns = int(when.timestamp() * 1_000_000) * 1000
            fd = os.open(tmp_path, flags_w, 0o600)
            try:
                view = memoryview(raw)
                while view:
                    view = view[os.write(fd, view) :]
                if chown:
                    os.fchown(fd, uid, gid)
                os.utime(fd, ns=(ts_ns, ts_ns))
            finally:
                os.close(fd)
            os.rename(tmp_path, f"{cur_dir}/{name}")
        self._seed_counter = n

    # --------------------------------------------------------------- doveadm
    def doveadm(self, *args: str) -> str:
        """Run ``doveadm -c <config> ARGS``; return stdout, raise DovecotError on failure."""
        res = subprocess.run([DOVEADM, "-c", str(self.config_path), *args], capture_output=True, timeout=60)
        if res.returncode != 0:
            raise DovecotError(
                f"doveadm {' '.join(args)} failed ({res.returncode}): {res.stderr.decode(errors='replace').strip()}"
            )
        return res.stdout.decode("utf-8", errors="replace")

    # ------------------------------------------------------------- lifecycle
    @property
    def pid(self) -> int | None:
        """PID of the dovecot master process (None once stopped)."""
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        """Stop the master and every process it spawned. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        _LIVE_SERVERS.discard(self)
        if proc.poll() is None:
            # Dovecot's own shutdown SIGQUITs children that are still alive and
            # then sleeps a hard-coded 1 s (up to 6 s).  Instead: freeze the
            # master and all its children (so nobody can respawn or reconnect),
            # SIGKILL the children, then let the master handle SIGTERM: it reaps
            # them and exits within a few ms.
            # The log process is killed last, after it had a moment to write
            # what the others sent it.
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
        # Children normally exit with the master; make sure none outlive it.
        deadline = time.monotonic() + 3
        while True:
            left = _session_members(proc.pid)
            if not left:
                break
            if time.monotonic() > deadline:
                for p in left:
                    _signal(p, signal.SIGKILL)
                deadline = time.monotonic() + 3
            time.sleep(0.02)
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------- helpers
    def _own(self, path: Path, mode: int) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.mail_uid, self.mail_gid)
        os.chmod(path, mode)

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the Dovecot log (and of the master's stderr)."""
        out = []
        for p in (self.log_path, self.base_dir / "dovecot.stderr"):
            try:
                out.extend(p.read_text(errors="replace").splitlines()[-lines:])
            except FileNotFoundError:
                pass
        return "\n".join(out)


# ---------------------------------------------------------------------------
def _check_user_name(name: str) -> None:
    if not name or not re.fullmatch(r"[A-Za-z0-9._@+-]+", name) or name.startswith("."):
        raise ValueError(f"unsupported user name {name!r}")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _wait_gone(sid: int, pids: list[int], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        alive = set(_session_members(sid))
        pids = [p for p in pids if p in alive]
        if pids:
            time.sleep(0.002)


def _session_members(sid: int) -> list[int]:
    """PIDs of processes whose session id is ``sid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # comm may contain spaces/parens: split after the last ')'.
        fields = data[data.rfind(b")") + 2 :].split()
        # fields: state ppid pgrp session ...
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != b"Z":
            found.append(int(entry))
    return found


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _make_traversable(path: Path) -> None:
    """As root, give "others" +x on ``path`` and its ancestors so dovecot's
    unprivileged processes (mail uid, dovecot, dovenull) can reach it.
    pytest creates /tmp/pytest-of-root/... with mode 0700."""
    for p in [path, *path.parents]:
        st = p.stat()
        if not st.st_mode & 0o001:
            os.chmod(p, (st.st_mode & 0o7777) | 0o001)


def _make_cert(cert_dir: Path) -> tuple[Path, Path]:
    cert = cert_dir / "cert.pem"
    key = cert_dir / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
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
) -> str:
    home_root = base_dir / "home"
    rawlog_root = base_dir / "rawlog"
    dh = Path("/usr/share/dovecot/dh.pem")
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
        "",
        f"default_login_user = {login_user}",
        f"default_internal_user = {internal_user}",
        "first_valid_uid = 1" if root else f"first_valid_uid = {mail_uid}",
        "first_valid_gid = 1" if root else f"first_valid_gid = {mail_gid}",
        "",
        "ssl = yes",
        f"ssl_cert = <{cert}",
        f"ssl_key = <{key}",
        "ssl_min_protocol = TLSv1.2",
        *([f"ssl_dh = <{dh}"] if dh.exists() else []),
        "disable_plaintext_auth = no",
        "auth_mechanisms = plain login",
        "auth_failure_delay = 0",
        "auth_cache_size = 0",
        "auth_verbose = yes",
        "",
        "passdb {",
        "  driver = dict",
        f"  args = {passdb_conf}",
        "  result_failure = continue-fail",
        "}",
        # Catch-all that never lets anyone in: it only "succeeds" to attach the
        # nodelay field (fields of failed passdbs are rolled back), and then
        # turns the result into a failure.  Without it every failed login is
        # answered only after auth's 0.5 s failure-flush timer.
        "passdb {",
        "  driver = static",
        "  args = nopassword=y nodelay=y",
        "  result_success = return-fail",
        "}",
        "userdb {",
        "  driver = static",
        f"  args = uid={mail_uid} gid={mail_gid} home={home_root}/%u",
        "}",
        "",
        "mail_location = maildir:~/Maildir:LAYOUT=fs",
        "mailbox_list_index = no",
        "mail_fsync = never",
        "mail_max_userip_connections = 100",
        "namespace inbox {",
        "  inbox = yes",
        "  separator = /",
        "  prefix =",
        "  mailbox Sent {",
        "    special_use = \\Sent",
        "    auto = no",
        "  }",
        "  mailbox Trash {",
        "    special_use = \\Trash",
        "    auto = no",
        "  }",
        "  mailbox Junk {",
        "    special_use = \\Junk",
        "    auto = no",
        "  }",
        "  mailbox Drafts {",
        "    special_use = \\Drafts",
        "    auto = no",
        "  }",
        "}",
        "",
        "protocol imap {",
        f"  rawlog_dir = {rawlog_root}/%u",
        "  mail_max_userip_connections = 100",
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
        *([] if root else ["  chroot ="]),
        "}",
        "service imap {",
        "  process_limit = 500",
        "}",
        # No anvil auth-penalty socket => auth penalty (2..15 s delay of the next
        # login from the same IP after a failure) is disabled.
        "service anvil {",
        "  unix_listener anvil-auth-penalty {",
        "    mode = 0",
        "  }",
        *([] if root else ["  chroot ="]),
        "}",
    ]
    if not root:
        # Everything runs as the invoking user: no chroot, no user switching.
        lines += [
            f"default_internal_group = {grp.getgrgid(mail_gid).gr_name}",
            "service auth-worker {",
            "  user = $default_internal_user",
            "}",
        ]
    return "\n".join(lines) + "\n"


def start_dovecot(base_dir: Path, *, hide_condstore: bool = False) -> DovecotServer:
    """Start a private Dovecot (IMAP only) on free 127.0.0.1 ports; wait until it greets."""
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

    for sub in ("home", "rawlog", "state", "tls", "auth"):
        (base_dir / sub).mkdir(exist_ok=True)
        os.chmod(base_dir / sub, 0o755)
    os.chmod(base_dir, 0o755)
    passdb_dir = base_dir / "auth" / "passdb"
    passdb_dir.mkdir(exist_ok=True)
    if root:
        os.chown(passdb_dir, 0, auth_gid)
    os.chmod(passdb_dir, 0o750)
    passdb_conf = base_dir / "auth" / "dict-passdb.conf.ext"
    passdb_conf.write_text(
        f"uri = fs:posix:prefix={base_dir / 'auth'}/\n"
        "default_pass_scheme = PLAIN\n"
        "iterate_disable = yes\n"
        "key passdb {\n"
        "  key = passdb/%u\n"
        "  format = json\n"
        "}\n"
        "passdb_objects = passdb\n"
    )
    os.chmod(passdb_conf, 0o644)

    run_dir = base_dir / "run"
    own_run_dir = False
    if len(str(run_dir)) > _UNIX_SOCKET_MAX - 30:
        run_dir = Path(tempfile.mkdtemp(prefix="dovecot-", dir="/tmp"))
        own_run_dir = True
    run_dir.mkdir(exist_ok=True)
    os.chmod(run_dir, 0o755)

    cert, key = _make_cert(base_dir / "tls")
    log_path = base_dir / "dovecot.log"
    config_path = base_dir / "dovecot.conf"

    last_err = ""
    for _attempt in range(3):  # retry if a picked port got taken meanwhile
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
            _own_run_dir=own_run_dir,
        )
        stderr = open(base_dir / "dovecot.stderr", "ab")
        try:
            server._proc = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        finally:
            stderr.close()
        _LIVE_SERVERS.add(server)
        err = _wait_ready(server)
        if err is None:
            return server
        last_err = err
        server._own_run_dir = False  # keep run_dir for the next attempt
        server.stop()
        if "Address already in use" not in server.log_tail():
            break
    if own_run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    raise DovecotError(
        f"dovecot did not become ready: {last_err}\n--- log tail ---\n"
        f"{_tail(log_path)}\n{_tail(base_dir / 'dovecot.stderr')}"
    )


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} missing)"


def _wait_ready(server: DovecotServer, timeout: float = 10.0) -> str | None:
    """Return None once the imaps port greets with "* OK", else an error string."""
    deadline = time.monotonic() + timeout
    ctx = server.ssl_context()
    err = "timeout"
    while time.monotonic() < deadline:
        proc = server._proc
        if proc is None or proc.poll() is not None:
            return f"dovecot exited with status {proc.returncode if proc else '?'}"
        try:
            with socket.create_connection((server.host, server.imaps_port), timeout=2) as raw:
                with ctx.wrap_socket(raw, server_hostname=server.host) as s:
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
        try:
            server.stop()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass
