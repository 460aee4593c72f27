"""A real SMTP server for tests: aiosmtpd with STARTTLS and AUTH, in the test process."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class SmtpServer:
    """A running aiosmtpd on loopback; `users` maps usernames to passwords."""

    port: int
    controller: Controller
    users: dict[str, str] = field(default_factory=dict)
    received: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        """Stop the server."""
        self.controller.stop()


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.server.received.append(envelope)
        return "250 OK"


def start_smtp(cert: Path, key: Path) -> SmtpServer:
    """STARTTLS required before AUTH (PLAIN/LOGIN), as real submission servers do on port 587."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server = SmtpServer(port=port, controller=None)  # type: ignore[arg-type]

    def authenticate(_server: Any, _session: Any, _envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword):
            user, password = data.login.decode(), data.password.decode()
            return AuthResult(success=server.users.get(user) == password, handled=False)
        return AuthResult(success=False, handled=False)

    controller = Controller(
        _Handler(server),
        hostname="127.0.0.1",
        port=port,
        tls_context=tls,
        require_starttls=True,
        authenticator=authenticate,
        auth_require_tls=True,
        ready_timeout=10,
    )
    controller.start()
    server.controller = controller
    return server
