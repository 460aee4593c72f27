"""The web process's limits over real sockets: capped bodies, signature first, 400 not 500, slow clients, logs."""

from __future__ import annotations

import hashlib
import hmac
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from flows import setup as setup_flow
from models.db import make_engine
from tests.support.cli import cli_env
from tests.support.fake_slack import FakeSlack
from tests.support.slack_app import SIGNING_SECRET, running_app

MiB = 1024 * 1024
FORM = "application/x-www-form-urlencoded"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_of(base_url: str) -> int:
    return int(urlsplit(base_url).port or 0)


def signed(body: bytes, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """Slack's headers for a raw body (signed over the bytes, as Slack does)."""
    ts = str(int(time.time()))
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def read_answer(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Whatever the server says until it closes the connection or the head and a short body are in."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def stream_body(port: int, head: bytes, total: int, *, chunked: bool) -> tuple[bytes, int]:
    """Send head, then up to `total` body bytes in 64 KiB pieces, stopping once the server answers.

    Returns the answer and how many body bytes had been sent when it came.
    """
    piece = b"x" * 65536
    frame = b"%x\r\n" % len(piece) + piece + b"\r\n" if chunked else piece
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head)
        try:
            while sent < total and not select.select([sock], [], [], 0)[0]:
                sock.sendall(frame)
                sent += len(piece)
            if chunked and sent >= total:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        return read_answer(sock, timeout=60), sent


def peak_rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak resident size) of this process
        return True
    except OSError:
        return False


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_body_is_refused_early_without_filling_memory(slack, chunked):
    total = 50 * MiB
    length = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % total
    head = (
        b"POST /slack/events HTTP/1.1\r\nHost: app\r\nContent-Type: " + FORM.encode() + b"\r\n" + length + b"\r\n\r\n"
    )
    measured = peak_rss_reset()
    before = peak_rss()
    answer, sent = stream_body(port_of(slack.base_url), head, total, chunked=chunked)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert sent < total // 3  # answered long before the 50 MB were through
    if measured:  # the server runs in this process: its peak memory did not grow by the body
        assert peak_rss() - before < 30 * MiB


def test_unsigned_and_badly_signed_requests_get_401_before_parsing(slack):
    url = f"{slack.base_url}/slack/events"
    for body, headers in [
        (b"payload=x", {}),
        (b"\xff\xfe\xfd", {}),
        (b"payload=x", {**signed(b"payload=x"), "X-Slack-Signature": "v0=" + "0" * 64}),
        (b"payload=x", {**signed(b"payload=x"), "X-Slack-Request-Timestamp": "soon"}),
        (b"payload=x", signed(b"payload=x", secret="someone-else")),
    ]:
        response = httpx.post(url, content=body, headers={"Content-Type": FORM, **headers})
        assert response.status_code == 401, (body, headers, response.text)
        assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\xff\xfe not utf-8", FORM),
        (b"payload=x", FORM),
        (b"payload=%5B1%5D", FORM),
        (b"[1, 2]", "application/json"),
        (b'{"type": "event_callback", "event": "not an object"}', "application/json"),
        (b'{"type": "block_actions", "actions": "not a list"}', "application/json"),
    ],
)
def test_signed_but_malformed_requests_get_400(slack, body, content_type):
    response = httpx.post(
        f"{slack.base_url}/slack/events", content=body, headers={"Content-Type": content_type, **signed(body)}
    )
    assert response.status_code == 400, response.text
    assert "Traceback" not in response.text
    # The app is fine afterwards: a real command still works.
    assert slack.driver.slash_command("help").status_code == 200


def drip(port: int, head: bytes, trickle: bytes, *, every: float, give_up: float) -> tuple[float, bytes]:
    """Send head, then one byte of trickle every `every` seconds until the server answers or closes."""
    started = time.monotonic()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        for byte in trickle:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([sock], [], [], every)[0]:
                answer = read_answer(sock, timeout=2)
                break
            if time.monotonic() - started > give_up:
                break
    return time.monotonic() - started, answer


def test_slow_clients_are_cut_off(tmp_path, dovecot):
    limit = 2.0
    with running_app(tmp_path, dovecot, EMAILSYNC_CLIENT_TIMEOUT=str(limit)) as app:
        port = port_of(app.base_url)
        # The headers at once, then the body one byte a second: 408 when the body deadline passes.
        head = (
            b"POST /slack/events HTTP/1.1\r\nHost: app\r\nContent-Type: "
            + FORM.encode()
            + b"\r\nContent-Length: 100\r\n\r\n"
        )
        elapsed, answer = drip(port, head, b"a" * 100, every=1.0, give_up=limit + 8)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert elapsed < limit + 1.5
        # The headers themselves one byte a second, never finished: cut off too (uvicorn alone never does).
        request_line = b"GET /healthz HTTP/1.1\r\nHost: app\r\nX-Slow: " + b"a" * 100
        elapsed, answer = drip(port, b"", request_line, every=1.0, give_up=limit + 8)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert elapsed < limit + 1.5
        # A connection that says nothing is closed too.
        with socket.create_connection(("127.0.0.1", port), timeout=limit + 8) as sock:
            started = time.monotonic()
            assert sock.recv(100) == b""
            assert time.monotonic() - started < limit + 1.5
        # The app still answers normal requests.
        assert httpx.get(f"{app.base_url}/healthz").status_code in (200, 503)


def test_every_page_sends_the_security_headers(slack):
    _, token = setup_flow.start_setup(slack.services.db, team_id="T0001", user_id="U0001")
    link = f"{slack.base_url}/connect/{token}"
    answers = {
        "healthz": httpx.get(f"{slack.base_url}/healthz"),
        "connect page": httpx.get(link),
        "connect post": httpx.post(link, data={"csrf": "guess", "email": "a@b.c", "password": "p"}),
        "link problem": httpx.get(f"{slack.base_url}/connect/not-a-real-token"),
        "no such page": httpx.get(f"{slack.base_url}/nothing-here"),
        "slack events": httpx.post(f"{slack.base_url}/slack/events", content=b"payload=x"),
    }
    assert [answers[k].status_code for k in answers] == [503, 200, 403, 404, 404, 401]
    for name, response in answers.items():
        headers = response.headers
        csp = headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, name
        assert "script-src" not in csp and "unsafe-inline" not in csp, name
        assert headers.get("x-content-type-options") == "nosniff", name
        assert headers.get("referrer-policy") == "no-referrer", name
        assert headers.get("cache-control") == "no-store", name


def test_tokens_and_oauth_codes_never_reach_the_access_log(tmp_path, dovecot):
    """`emailsync serve` itself, its log captured: the access log is on, and redacted."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with FakeSlack() as fake:
        env = cli_env(
            tmp_path,
            dovecot,
            PORT=str(port),
            HOST="127.0.0.1",
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=fake.api_url,
            PUBLIC_BASE_URL=base,
        )
        Path(env["EMAILSYNC_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
        log = tmp_path / "serve.log"
        serve = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"],
            env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            cwd=env["EMAILSYNC_DATA_DIR"],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{base}/healthz", timeout=2)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, log.read_text()[-3000:]
                    time.sleep(0.2)
            db = make_engine(env["DATABASE_URL"])
            _, token = setup_flow.start_setup(db, team_id="T0001", user_id="U0001")
            db.dispose()
            assert httpx.get(f"{base}/connect/{token}").status_code == 200
            assert httpx.post(f"{base}/connect/{token}", data={"csrf": "x"}).status_code == 403
            httpx.get(f"{base}/slack/oauth_redirect", params={"code": "oauth-code-1234", "state": "state-5678"})
        finally:
            serve.terminate()
            serve.wait(timeout=60)
    text = log.read_text()
    assert '"GET /connect/[token] HTTP/1.1" 200' in text, text[-3000:]  # the access log is there...
    assert '"POST /connect/[token] HTTP/1.1" 403' in text
    assert token not in text  # ...without the one-time token
    assert "oauth-code-1234" not in text and "state-5678" not in text
