"""The web process: Starlette routes (/healthz now; Slack and the connect page later) and the worker child."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bot.services import Services
from models import accounts as account_queries
from models.clock import utcnow
from models.db import ping, session_scope
from sync.scheduler import HEARTBEAT_NAME

log = logging.getLogger(__name__)


def create_app(services: Services) -> Starlette:
    """The ASGI app; handlers never block the event loop (database work runs in a thread)."""
    from starlette.concurrency import run_in_threadpool

    max_age = dt.timedelta(seconds=max(30.0, services.settings.tick_seconds * 6))

    def _health() -> tuple[bool, dict[str, object]]:
        if not ping(services.db):
            return False, {"database": "down"}
        with session_scope(services.db) as session:
            ticked = account_queries.last_heartbeat(session, name=HEARTBEAT_NAME)
        fresh = ticked is not None and utcnow() - ticked <= max_age
        return fresh, {
            "database": "up",
            "last_tick": ticked.isoformat() if ticked else None,
            "clock": "ok" if fresh else "stale",
        }

    async def healthz(_request: Request) -> JSONResponse:
        ok, body = await run_in_threadpool(_health)
        return JSONResponse({"ok": ok, **body}, status_code=200 if ok else 503)

    return Starlette(routes=[Route("/healthz", healthz)])


def serve(services: Services) -> None:
    """Start the worker as a child process (syncs never run in web threads), then serve HTTP."""
    worker = subprocess.Popen([sys.executable, "-m", "bot", "worker"], env=os.environ.copy())
    log.info("started worker process %s", worker.pid)
    try:
        uvicorn.run(create_app(services), host="0.0.0.0", port=services.settings.port, log_level="info")
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
