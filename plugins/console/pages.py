"""The console's pages as an ASGI app: static files shipped in the wheel, and the one page shell
(index.html) for every page path, so that /console/memories can be bookmarked and reloaded.

Served with a Content-Security-Policy that allows only this origin's own scripts, styles and
connections (no inline script, no CDN, no frames): whatever a memory's text holds, it is shown
as text, and nothing a page loads can send it elsewhere."""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path

STATIC = Path(__file__).parent / "static"
PAGES = ("", "memories", "run", "traces", "audit", "approvals", "policies", "models", "activity", "login")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}


class ConsolePages:
    """GET and HEAD only; files read once (they are part of the installed package)."""

    def __init__(self, root: Path = STATIC):
        self.root = root.resolve()
        self._cache: dict[str, tuple[bytes, str, str]] = {}

    def _file(self, relative: str) -> tuple[bytes, str, str] | None:
        if relative not in self._cache:
            path = (self.root / relative).resolve()
            if not path.is_relative_to(self.root) or not path.is_file():
                return None
            body = path.read_bytes()
            kind = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            self._cache[relative] = (body, kind, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        return self._cache[relative]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        prefix = scope.get("root_path", "")
        path = scope["path"][len(prefix):] if scope["path"].startswith(prefix) else scope["path"]
        if path == "":  # /console -> /console/ so that relative asset URLs resolve under it
            return await _send(send, 308, b"", [(b"location", (prefix + "/").encode())])
        if scope["method"] not in ("GET", "HEAD"):
            return await _send(send, 405, b"the console's pages are read-only; its changes go through /v1/",
                               [(b"allow", b"GET, HEAD"), (b"content-type", b"text/plain; charset=utf-8")])
        relative = path.lstrip("/")
        found = None if relative in PAGES else self._file(relative)
        if found is None and relative.split("/")[0] in PAGES and "." not in relative:
            found = self._file("index.html")  # a page path: the shell renders it
        if found is None:
            return await _send(send, 404, b"no such page", [(b"content-type", b"text/plain; charset=utf-8")])
        body, kind, etag = found
        headers = [(b"content-type", kind.encode()), (b"etag", etag.encode()),
                   (b"cache-control", b"no-cache"),  # revalidated each time: an upgrade shows at once
                   (b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                   (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]
        if etag in _header(scope, b"if-none-match"):
            return await _send(send, 304, b"", headers)
        await _send(send, 200, b"" if scope["method"] == "HEAD" else body, headers, length=len(body))


def _header(scope, name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == name), "")


async def _send(send, status: int, body: bytes, headers: list, length: int | None = None) -> None:
    headers = [*headers, (b"content-length", str(len(body) if length is None else length).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
