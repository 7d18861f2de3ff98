"""The playground's web server: standard library only, bound to loopback by default.

Routes (JSON in and out; errors are ``{"error": message}`` with status 400/404/413/415):

=========================================  ==========================================
``GET  /``                                  the page (``static/index.html``)
``GET  /static/<file>``                     its script and style sheet
``GET  /api/options``                       optimizers, schedules, surfaces, datasets
``POST /api/surface``                       a surface on a grid + contour lines
``POST /api/race``                          trajectories of several optimizers
``POST /api/trainer``                       create a training run -> ``session`` id
``POST /api/trainer/<id>/step``             ``{"n": k}`` more steps
``POST /api/trainer/<id>/reset``            back to step 0 with the same settings
``GET  /api/trainer/<id>?since=k``          the current state
``DELETE /api/trainer/<id>``                drop the run
=========================================  ==========================================

POST bodies must be ``application/json`` (so a page on another site cannot post to it
with a plain form), and, when bound to a loopback address, the ``Host`` header must
name the loopback (against DNS rebinding).
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
import traceback
import webbrowser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from descend.playground import api

MAX_BODY = 256 * 1024
_STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
_TRAINER = re.compile(r"^/api/trainer/([0-9a-f]{1,32})(/step|/reset)?$")


def _clean(obj):
    """Replace non-finite floats by ``None`` (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _static(name: str) -> bytes | None:
    if not re.fullmatch(r"[a-z0-9_-]+\.[a-z]+", name):
        return None
    f = resources.files("descend.playground").joinpath("static", name)
    return f.read_bytes() if f.is_file() else None


class Handler(BaseHTTPRequestHandler):
    """Routes requests to :mod:`descend.playground.api`; the server holds the ``Api``."""

    server_version = "descend-playground"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet unless asked
        if getattr(self.server, "verbose", False):
            super().log_message(fmt, *args)

    # ---------------------------------------------------------------- plumbing

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(_clean(obj), allow_nan=False).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _host_ok(self) -> bool:
        if self.server.server_address[0] not in ("127.0.0.1", "::1"):
            return True
        host = self.headers.get("Host") or ""
        name = host.split("]")[0] + "]" if host.startswith("[") else host.rsplit(":", 1)[0]
        return name in _LOOPBACK_NAMES

    def _body(self) -> dict | None:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._error(400, "`Content-Length` must be an integer >= 0. Received: "
                             f"{self.headers.get('Content-Length')!r}")
            return None
        if length > MAX_BODY:
            self._error(413, f"request body must be at most {MAX_BODY} bytes. Received: {length}")
            return None
        raw = self.rfile.read(length) if length else b""
        if ctype != "application/json":
            self._error(415, f"`Content-Type` must be application/json. Received: {ctype!r}")
            return None
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            self._error(400, f"request body must be valid JSON ({str(e) or 'nested too deeply'})")
            return None
        if not isinstance(body, dict):
            self._error(400, f"request body must be a JSON object. Received: {type(body).__name__}")
            return None
        return body

    def _dispatch(self, fn) -> None:
        if not self._host_ok():
            self._error(403, "`Host` must be the loopback address this server is bound to")
            return
        try:
            result = fn()
        except api.ApiError as e:
            self._error(e.status, e.message)
            return
        except Exception as e:  # a bug: say so on the page and in the terminal
            traceback.print_exc(file=sys.stderr)
            self._error(500, f"internal error: {type(e).__name__}: {e}")
            return
        if result is not None:
            self._json(200, result)

    # ---------------------------------------------------------------- verbs

    def do_GET(self):  # noqa: N802
        url = urlsplit(self.path)
        path = url.path
        a: api.Api = self.server.api

        def route():
            if path in ("/", "/index.html"):
                self._send(200, _static("index.html"), _STATIC_TYPES[".html"])
                return None
            if path.startswith("/static/"):
                name = path[len("/static/"):]
                data = _static(name)
                if data is None:
                    raise api.ApiError(404, f"no such file: {name!r}")
                ext = name[name.rfind("."):]
                self._send(200, data, _STATIC_TYPES.get(ext, "application/octet-stream"))
                return None
            if path == "/api/options":
                return api.options()
            m = _TRAINER.match(path)
            if m and not m.group(2):
                since = parse_qs(url.query).get("since", ["0"])[0]
                return a.state(m.group(1), since)
            raise api.ApiError(404, f"no such page: {path!r}")

        self._dispatch(route)

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        path = urlsplit(self.path).path
        a: api.Api = self.server.api
        if not self._host_ok():
            self._error(403, "`Host` must be the loopback address this server is bound to")
            return
        body = self._body()
        if body is None:
            return

        def route():
            if path == "/api/surface":
                return api.surface(body)
            if path == "/api/race":
                return api.race_request(body)
            if path == "/api/trainer":
                return a.create(body)
            m = _TRAINER.match(path)
            if m and m.group(2) == "/step":
                return a.step(m.group(1), body)
            if m and m.group(2) == "/reset":
                return a.reset(m.group(1))
            raise api.ApiError(404, f"no such endpoint: POST {path!r}")

        self._dispatch(route)

    def do_DELETE(self):  # noqa: N802
        m = _TRAINER.match(urlsplit(self.path).path)
        a: api.Api = self.server.api

        def route():
            if m and not m.group(2):
                return a.delete(m.group(1))
            raise api.ApiError(404, "no such endpoint")

        self._dispatch(route)


def make_server(host: str = "127.0.0.1", port: int = 0, *, max_sessions: int = 16,
                verbose: bool = False) -> ThreadingHTTPServer:
    """A ready (not yet serving) playground server; ``port=0`` picks a free port.

    Example:
        >>> srv = make_server(port=0)
        >>> srv.server_address[1] > 0
        True
        >>> srv.server_close()
    """
    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    srv.api = api.Api(max_sessions=max_sessions)
    srv.verbose = verbose
    return srv


def url_of(srv: ThreadingHTTPServer) -> str:
    """The ``http://host:port/`` address a running server listens on (IPv6 hosts in brackets)."""
    host, port = srv.server_address[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/"


def serve(host: str = "127.0.0.1", port: int = 8765, *, open_browser: bool = True,
          max_sessions: int = 16, verbose: bool = False) -> int:
    """Serve the playground until Ctrl-C; open it in the default browser unless told not to."""
    srv = make_server(host, port, max_sessions=max_sessions, verbose=verbose)
    url = url_of(srv)
    print(f"descend playground: {url}  (Ctrl-C to stop)", flush=True)
    if open_browser:
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        srv.server_close()
    return 0
