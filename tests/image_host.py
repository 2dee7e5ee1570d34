"""A real HTTP server on 127.0.0.1 that serves images the way hosts on the Internet may:
plainly, through redirects, slowly, too large, or lying about what they send. For the tests
that fetch images by URL (no mock of the HTTP client)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

#: How long a slow response lasts at most (the server's own bound; tests time out sooner).
SLOW_LIMIT_S = 10.0


class ImageHost:
    """Paths: ``/image.png`` (the ``files`` given, by name), ``/redirect?to=URL`` (302),
    ``/hang`` (no answer until stopped), ``/trickle`` (a PNG header, then a byte every
    50 ms), ``/big`` (PNG bytes without end, no length), ``/status/N``."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        self.stopping = threading.Event()
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                host.requests.append(self.path)
                host.answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        """Serve one request by its path."""
        parts = urlsplit(handler.path)
        name = parts.path.lstrip("/")
        if name in self.files:
            self._send(handler, 200, self.files[name], "image/png")
        elif name == "redirect":
            handler.send_response(302)
            handler.send_header("Location", parse_qs(parts.query)["to"][0])
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        elif name == "hang":
            self.stopping.wait(SLOW_LIMIT_S)
        elif name == "trickle":
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.end_headers()
            handler.wfile.write(b"\x89PNG\r\n\x1a\n")
            for _ in range(int(SLOW_LIMIT_S / 0.05)):
                if self.stopping.wait(0.05):
                    break
                handler.wfile.write(b"\0")
                handler.wfile.flush()
        elif name == "big":
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.end_headers()
            handler.wfile.write(b"\x89PNG\r\n\x1a\n")
            chunk = b"\0" * 65536
            for _ in range(1024):  # 64 MB at most
                if self.stopping.is_set():
                    break
                try:
                    handler.wfile.write(chunk)
                except OSError:  # the client stopped reading: as it should
                    break
        elif name.startswith("status/"):
            self._send(handler, int(name.split("/")[1]), b"no", "text/plain")
        else:
            self._send(handler, 404, b"not found", "text/plain")

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, kind: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@contextmanager
def image_host(files: dict[str, bytes]) -> Iterator[ImageHost]:
    """An ``ImageHost`` serving in a thread; stopped (slow answers cut short) on leaving."""
    host = ImageHost(files)
    thread = threading.Thread(target=host.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield host
    finally:
        host.stopping.set()
        host.server.shutdown()
        host.server.server_close()
        thread.join(10)
