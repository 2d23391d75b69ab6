"""A throwaway redis-server for a benchmark: a free port, no persistence, its own temporary folder.

The benchmarks that time the Redis store (``store.py``, ``changelog.py``, ``pipeline.py``) start their
own server with this, as the tests do (tests/fixtures/redis.py), and never touch one they did not start.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis


@contextmanager
def local_redis(timeout_s: float = 10.0) -> Iterator[str | None]:
    """Yield the URL of a new redis-server once it answers PING (None where redis-server is not
    installed), and stop it afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen([*args, "--dir", tmp], stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0)
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    if client.ping():
                        break
                except redis.RedisError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                time.sleep(0.05)
            client.close()
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(30)
