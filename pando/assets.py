"""What the root serves over plain HTTP: the volunteer page, its assets, and the
``pando`` helper files that browser volunteers load into Pyodide.

Only files under ``pando/web/`` (and the named helper files) are ever served.
Answers carry an ETag and ``Cache-Control: no-cache``, so a returning tab
revalidates with one small request instead of downloading Pyodide again. The
wasm goes as ``application/wasm``, which streaming compilation requires; the
code Chromium compiles from it stays cached across those revalidations (a 304
keeps the cached response, whose time the compiled code is matched against).
Each file is read once per run and then served from that one copy, however
many clients ask for it at once.

Of Pyodide, which npm installs into ``pando/web/node_modules/``, the page loads
only :data:`PYODIDE_FILES`: ``setup.py`` imports this module to put exactly
those into the wheel and sdist, so it needs the standard library only.
"""
from __future__ import annotations

import email.utils
import functools
import mimetypes
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from websockets.http11 import Request

WEB_DIR = Path(__file__).resolve().parent / "web"
_PACKAGE_DIR = Path(__file__).resolve().parent

#: Where npm installs Pyodide, and the files of it the page loads (worker.mjs imports the first).
PYODIDE_DIR = WEB_DIR / "node_modules" / "pyodide"
PYODIDE_FILES = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json")

#: The helper package shipped into Pyodide, by URL path.
HELPER_FILES = {f"/py/pando/{name}": _PACKAGE_DIR / name for name in ("__init__.py", "module.py", "items.py", "reporting.py", "bundle.py")}

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


@dataclass(frozen=True)
class Answer:
    """An HTTP response to a plain GET: the head to send, then the body (shared, never copied)."""

    status: HTTPStatus
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def head(self) -> bytes:
        lines = [f"HTTP/1.1 {self.status.value} {self.status.phrase}", f"Date: {email.utils.formatdate(usegmt=True)}",
                 f"Content-Length: {len(self.body)}", "Connection: close",
                 *(f"{name}: {value}" for name, value in self.headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_NOT_FOUND = Answer(HTTPStatus.NOT_FOUND, (("Content-Type", "text/plain; charset=utf-8"),), b"not found\n")


def missing_pyodide() -> list[str]:
    """The files of :data:`PYODIDE_FILES` that are not in :data:`PYODIDE_DIR`."""
    return [name for name in PYODIDE_FILES if not (PYODIDE_DIR / name).is_file()]


def pyodide_problem() -> str | None:
    """Why browser volunteers cannot start Python, in one line with what to run; None if they can."""
    missing = missing_pyodide()
    if not missing:
        return None
    what = "is not installed" if len(missing) == len(PYODIDE_FILES) else f"lacks {', '.join(missing)}"
    # package.json and package-lock.json come with every install, so npm ci works wherever pando is.
    return (f"pando: warning: browser volunteers cannot start: Pyodide {what} in {PYODIDE_DIR}; "
            f"run `npm ci` in {WEB_DIR} (in a checkout: `make install`); pando-volunteer works without it")


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


@functools.lru_cache(maxsize=None)  # a run serves a few dozen files, and they do not change under it
def _load(file: Path) -> tuple[str, bytes] | None:
    """A file's ETag and bytes, read once; None if it cannot be read."""
    try:
        stat = file.stat()
        return f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"', file.read_bytes()
    except OSError:
        return None


def answer(request: Request) -> Answer:
    """The answer to a plain GET for a static file."""
    file = _find(unquote(urlsplit(request.path).path))
    loaded = _load(file) if file is not None else None
    if file is None or loaded is None:
        return _NOT_FOUND
    etag, body = loaded
    common = (("ETag", etag), ("Cache-Control", "no-cache"))
    if request.headers.get("If-None-Match") == etag:
        return Answer(HTTPStatus.NOT_MODIFIED, common)
    kind = _TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    return Answer(HTTPStatus.OK, (("Content-Type", kind), *common), body)
