"""The Prometheus pages: the worker's own small server (/metrics, /healthz) and serve's merged /metrics.

`emailsync serve` runs the worker as a child process, so the sync metrics live there. serve's /metrics
fetches the child's page over loopback and merges it with its own, each sample labelled with the
process it came from (`process="serve"` or `"worker"`); a child that does not answer shows as
`emailsync_worker_metrics_up 0`. (prometheus_client's multiprocess mode would need its directory set in
the environment before the first import of prometheus_client, and gauges per pid; one scrape over
loopback keeps each process's registry ordinary.)
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from sync.metrics import REGISTRY

log = logging.getLogger(__name__)
Health = Callable[[], tuple[bool, dict[str, object]]]
SCRAPE_TIMEOUT = 3.0  # seconds; Prometheus's own scrape timeout is 10 s by default

__all__ = ["CONTENT_TYPE_LATEST", "MetricsListen", "MetricsServer", "listening_socket", "render_merged"]


def listening_socket(host: str) -> socket.socket:
    """A socket listening on a free port of ``host``, for a child process to inherit and serve on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(16)
    return sock


class _Merged:
    """A collector yielding several processes' families as one, each sample labelled with its process."""

    def __init__(self, parts: list[tuple[str, Iterable[Metric]]], extra: list[Metric]) -> None:
        self.parts = parts
        self.extra = extra

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for process, families in self.parts:
            for family in families:
                # `_created` timestamps come back from the text format as separate gauges; they are optional.
                if family.name.endswith("_created") and family.type == "gauge":
                    continue
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    out.add_sample(sample.name, {**sample.labels, "process": process}, sample.value, sample.timestamp)
        return [*merged.values(), *self.extra]


def render_merged(worker_url: str | None) -> bytes:
    """This process's metrics, plus the worker child's at ``worker_url`` when given."""
    parts: list[tuple[str, Iterable[Metric]]] = [("serve", list(REGISTRY.collect()))]
    extra: list[Metric] = []
    if worker_url is not None:
        up = Metric("emailsync_worker_metrics_up", "1 when the worker child's metrics page answered", "gauge")
        try:
            with urllib.request.urlopen(worker_url, timeout=SCRAPE_TIMEOUT) as answer:
                text = answer.read().decode("utf-8")
            parts.append(("worker", list(text_string_to_metric_families(text))))
            up.add_sample("emailsync_worker_metrics_up", {}, 1.0)
        except Exception as exc:  # the child is starting, restarting or gone: serve's own metrics still show
            log.info("worker metrics at %s did not answer (%s)", worker_url, type(exc).__name__)
            up.add_sample("emailsync_worker_metrics_up", {}, 0.0)
        extra.append(up)
    return generate_latest(_Merged(parts, extra))


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not worth a log line

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            try:
                ok, body = self.server.health()
            except Exception as exc:
                ok, body = False, {"error": type(exc).__name__}
            self._answer(200 if ok else 503, json.dumps({"ok": ok, **body}).encode(), "application/json")
        else:
            self._answer(404, b"not found: /metrics and /healthz are served here\n", "text/plain")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The scraper gave up first (serve's scrape of a child still starting times out): nothing to answer.
            log.info("metrics: the client left before the answer")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, where: MetricsListen, health: Health) -> None:
        super().__init__((where.host, where.port), _Handler, bind_and_activate=where.fd is None)
        if where.fd is not None:
            # A socket bound and listening in the parent (serve), inherited: no port to pick, so no race.
            self.socket.close()
            self.socket = socket.socket(fileno=where.fd)
            self.server_address = self.socket.getsockname()
        self.health = health


@dataclass(frozen=True)
class MetricsListen:
    """Where a worker serves its metrics: host and port, or a listening socket inherited as ``fd``."""

    host: str
    port: int
    fd: int | None = None


class MetricsServer:
    """/metrics and /healthz of a worker process, served by a thread of its own."""

    def __init__(self, where: MetricsListen, health: Health) -> None:
        self._server = _Server(where, health)
        self.host = str(self._server.server_address[0])
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> MetricsServer:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
