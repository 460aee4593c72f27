"""A server that drips a greeting one byte at a time: never slow enough for a read timeout, never done."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def dripping_server(interval: float = 0.5) -> Iterator[int]:
    """A loopback port whose every connection gets one byte of an endless greeting per `interval`."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        with conn:
            try:
                while not stop.is_set():
                    conn.sendall(b"*")
                    time.sleep(interval)
            except OSError:
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        server.close()
