"""The colour editor's web front end: a local HTTP server (standard library only) over an editor.EditorSession.

    GET  /                  the page (editor_static/index.html, editor.css, editor.js: a fixed list)
    GET  /api/state         {"width", "height", "preview_width", "preview_height", "hints", "output", ...}
    GET  /api/grey          the grey photo at preview size (PNG)
    GET  /api/suggest?x=&y= {"colors": ["#rrggbb", ...]}: the network's likeliest colours there
    POST /api/colorize      {"hints": [{"x", "y", "color"}, ...]} -> the preview (PNG)
    POST /api/save          {"hints": [...]} -> {"image": path, "hints": path}

Safety: it listens on 127.0.0.1 only; answers only requests whose Host is its own address (so a page of
another site that reaches it through DNS rebinding is refused), and POSTs only as application/json without
a foreign Origin (so another site's form or fetch cannot save); serves its three static files from memory
(no part of a request's path reaches the disk); refuses bodies over MAX_BODY; answers anything malformed
with a 4xx and a one-line reason ({"error": "..."}) and stays up. Stopping (Ctrl-C) waits for requests in
progress, so a save under way finishes; the files themselves are written atomically.
"""
from __future__ import annotations

import json
import math
import os
import sys
import threading
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from editor import EditorSession
from hints import HintError, hints_from_json
from image_io import InputError, first_line

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "editor_static")
# The only files served: URL path -> (file in STATIC_DIR, content type).
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/editor.css": ("editor.css", "text/css; charset=utf-8"),
          "/editor.js": ("editor.js", "text/javascript; charset=utf-8")}
MAX_BODY = 256 * 1024  # bytes: MAX_HINTS hints take about 25 KB
REQUEST_TIMEOUT = 30   # seconds a connection may stall before it is dropped
PAGE_POLICY = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; frame-ancestors 'none'"


class RequestError(Exception):
    """A request the server refuses: its status and a one-line reason."""

    def __init__(self, status: HTTPStatus, reason: str):
        super().__init__(reason)
        self.status = status


def load_static() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once at start: URL path -> (contents, content type)."""
    out = {}
    for url, (name, kind) in STATIC.items():
        with open(os.path.join(STATIC_DIR, name), "rb") as f:
            out[url] = (f.read(), kind)
    return out


def parse_hints_body(body: bytes):
    """A POST body {"hints": [...]} -> hints; RequestError (400) saying what is wrong."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"the body is not JSON ({first_line(e)[:100]})") from None
    if not isinstance(data, dict) or "hints" not in data:
        raise RequestError(HTTPStatus.BAD_REQUEST, 'expected a JSON object {"hints": [...]}')
    try:
        return hints_from_json(data["hints"], "request")
    except HintError as e:
        raise RequestError(HTTPStatus.BAD_REQUEST, str(e)) from None


def _coordinate(query: dict, name: str) -> float:
    """A finite number from the query string; RequestError (400) otherwise."""
    values = query.get(name)
    try:
        v = float(values[0]) if values and len(values) == 1 else math.nan
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"{name} must be one number, in the photo's pixels")
    return v


class EditorServer(ThreadingHTTPServer):
    """ThreadingHTTPServer on 127.0.0.1 for one EditorSession; port 0 picks a free port (see .url)."""

    daemon_threads = False  # server_close waits for requests in progress (a save finishes) ...
    block_on_close = True

    def __init__(self, session: EditorSession, port: int = 0):
        self.session = session
        self.static = load_static()
        super().__init__(("127.0.0.1", port), EditorHandler)
        self.port = self.server_address[1]
        self.hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self.origins = {f"http://{h}" for h in self.hosts}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


class EditorHandler(BaseHTTPRequestHandler):
    server: EditorServer
    server_version = "colour-editor"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request a connection: no idle keep-alive thread delays stopping
    timeout = REQUEST_TIMEOUT

    # -- responses ------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, kind: str, extra: dict | None = None) -> None:
        self.send_response(status)
        headers = {"Content-Type": kind, "Content-Length": str(len(body)), "Cache-Control": "no-store",
                   "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", **(extra or {})}
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: object, status: int = HTTPStatus.OK) -> None:
        self._send(status, (json.dumps(obj) + "\n").encode(), "application/json")

    def _error(self, status: int, reason: str) -> None:
        self._json({"error": reason.splitlines()[0] if reason else HTTPStatus(status).phrase}, status)

    def log_message(self, format: str, *args) -> None:  # quiet: the terminal shows only the address
        pass

    # -- checks ---------------------------------------------------------------------------------
    def _check_host(self) -> None:
        if self.headers.get("Host", "") not in self.server.hosts:
            raise RequestError(HTTPStatus.FORBIDDEN, "unknown Host: use the address the editor printed")

    def _body(self) -> bytes:
        origin = self.headers.get("Origin")
        if origin is not None and origin not in self.server.origins:
            raise RequestError(HTTPStatus.FORBIDDEN, "requests from other sites are refused")
        if self.headers.get_content_type() != "application/json":
            raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the body as application/json")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required") from None
        if not 0 <= length <= MAX_BODY:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY} bytes")
        return self.rfile.read(length)

    def _handle(self, route) -> None:
        """Run route(); every refusal becomes a one-line 4xx, an unforeseen failure a one-line 500."""
        try:
            self._check_host()
            route()
        except RequestError as e:
            self._error(e.status, str(e))
        except HintError as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))
        except InputError as e:  # e.g. the output folder cannot be written
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(e))
        except (OSError, ValueError, RuntimeError, MemoryError) as e:
            if isinstance(e, (BrokenPipeError, ConnectionResetError)):
                return  # the page went away mid-answer
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {first_line(e)}")

    # -- routes ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle(self._get)

    def do_HEAD(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def _get(self) -> None:
        url = urlsplit(self.path)
        session = self.server.session
        if url.path in self.server.static:
            body, kind = self.server.static[url.path]
            self._send(HTTPStatus.OK, body, kind, {"Content-Security-Policy": PAGE_POLICY,
                                                   "X-Frame-Options": "DENY"})
        elif url.path == "/api/state":
            self._json(session.state())
        elif url.path == "/api/grey":
            self._send(HTTPStatus.OK, session.grey_png(), "image/png")
        elif url.path == "/api/suggest":
            query = parse_qs(url.query, keep_blank_values=True)
            self._json({"colors": session.suggest(_coordinate(query, "x"), _coordinate(query, "y"))})
        else:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such page: {url.path[:80]}")

    def _post(self) -> None:
        path = urlsplit(self.path).path
        if path not in ("/api/colorize", "/api/save"):
            raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: {path[:80]}")
        hints = parse_hints_body(self._body())
        if path == "/api/colorize":
            self._send(HTTPStatus.OK, self.server.session.preview_png(hints), "image/png")
        else:
            self._json(self.server.session.save(hints))


def serve(session: EditorSession, port: int = 0, open_browser: bool = True, out=sys.stdout) -> int:
    """Serve the session until Ctrl-C (KeyboardInterrupt); prints the address, opens the default browser.
    Returns 0 once stopped; requests in progress (a save) finish first."""
    server = EditorServer(session, port)
    print(f"colour editor for {session.name}: {server.url}  (Ctrl-C to stop)", file=out, flush=True)
    if open_browser:
        threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=out, flush=True)
    finally:
        server.server_close()
    return 0
