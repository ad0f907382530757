"""A folder served over http on 127.0.0.1 for the tests that read shards over http (this file's tests and
the 2-node test): `with serve_directory(path) as url: ShardDataset(url)`.

A thread of this process runs the server, so a test using it starts no process; it lists the paths it
was asked for in `requests` (to check what a reader fetched) and answers 404 for a missing file.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _QuietHandler(SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test output stays readable


@contextlib.contextmanager
def serve_directory(path: str | Path, requests: list[str] | None = None) -> Iterator[str]:
    """Serve `path` at `http://127.0.0.1:<free port>` while the block runs; yields that base URL.

    Args:
        path: the folder to serve (its files at `<url>/<name>`).
        requests: a list the server appends every requested path to (e.g. "/index.json").
    """
    handler = type("Handler", (_QuietHandler,), {"requests": requests if requests is not None else []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(path)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
