"""A tiny HTTP file server on 127.0.0.1 for download tests: Range requests, a one-time dropped connection, logs.

Never binds anything but 127.0.0.1, serves only the in-memory files it was given, and stops when the test ends.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Request:
    path: str
    range: str | None


@dataclass
class LocalServer:
    files: dict[str, bytes] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before the connection drops
    drops_left: dict[str, int] = field(default_factory=dict)  # path -> how many requests are dropped
    ignore_range: bool = False  # answer 200 with the whole file even when asked for a range
    requests: list[Request] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def drop_once(self, path: str, after_bytes: int, times: int = 1) -> None:
        self.drop_after[path] = after_bytes
        self.drops_left[path] = times

    def __enter__(self) -> LocalServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                path = self.path.lstrip("/")
                server.requests.append(Request(path, self.headers.get("Range")))
                body = server.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                range_header = self.headers.get("Range")
                if range_header and not server.ignore_range:
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if server.drops_left.get(path, 0) > 0:
                    server.drops_left[path] -= 1
                    self.wfile.write(body[start : start + server.drop_after[path]])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # the rest of the announced length never comes
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def closed_port_url(path: str = "file.bin") -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting is refused at once (the 'no network' case)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"
