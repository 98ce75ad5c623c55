"""What the root serves over plain HTTP: the volunteer page, its assets, and the
``pando`` helper files that browser volunteers load into Pyodide.

Only files under ``pando/web/`` (and the named helper files) are ever served.
Answers carry an ETag and ``Cache-Control: no-cache``, so a returning tab
revalidates with one small request instead of downloading Pyodide again.
"""
from __future__ import annotations

import email.utils
import mimetypes
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

WEB_DIR = Path(__file__).resolve().parent / "web"
_PACKAGE_DIR = Path(__file__).resolve().parent

#: The helper package shipped into Pyodide, by URL path.
HELPER_FILES = {f"/py/pando/{name}": _PACKAGE_DIR / name for name in ("__init__.py", "module.py", "items.py", "reporting.py")}

#: Page paths that are not file names.
ALIASES = {"/monitor": "/monitor.html"}

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".zip": "application/zip",
    ".py": "text/x-python; charset=utf-8",
    ".svg": "image/svg+xml",
}


def _response(status: HTTPStatus, headers: list[tuple[str, str]], body: bytes = b"") -> Response:
    headers = [("Date", email.utils.formatdate(usegmt=True)), ("Content-Length", str(len(body))), *headers]
    return Response(status.value, status.phrase, Headers(headers), body)


def _not_found() -> Response:
    return _response(HTTPStatus.NOT_FOUND, [("Content-Type", "text/plain; charset=utf-8")], b"not found\n")


def _find(path: str) -> Path | None:
    """The file a URL path names, or None if it names nothing servable."""
    if path in HELPER_FILES:
        return HELPER_FILES[path]
    path = ALIASES.get(path, path)
    if "\0" in path:
        return None
    candidate = (WEB_DIR / path.lstrip("/")).resolve()
    if candidate.is_dir():
        candidate = candidate / "index.html"
    if not candidate.is_relative_to(WEB_DIR) or not candidate.is_file():
        return None
    return candidate


def serve_file(request: Request) -> Response:
    """Answer a GET for a static file."""
    file = _find(unquote(urlsplit(request.path).path))
    if file is None:
        return _not_found()
    try:
        stat = file.stat()
        etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        common = [("ETag", etag), ("Cache-Control", "no-cache")]
        if request.headers.get("If-None-Match") == etag:
            return _response(HTTPStatus.NOT_MODIFIED, common)
        body = file.read_bytes()
    except OSError:
        return _not_found()
    kind = _TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    return _response(HTTPStatus.OK, [("Content-Type", kind), *common], body)
