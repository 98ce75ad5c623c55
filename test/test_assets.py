"""The root's plain HTTP side: the page, its assets, the helper package, and nothing else."""
from __future__ import annotations

import http.client
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, Processes, lines
from pando import assets

pytestmark = pytest.mark.timeout(60)


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@pytest.fixture
def port(procs: Processes) -> int:
    root = procs.pando(str(EXAMPLES / "square_fast.py"), "--stdin", "--start-idle", stdin=lines(1))
    return root.port


def test_page_and_assets_with_their_types(port: int) -> None:
    status, headers, body = get(port, "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"<html" in body.lower()
    status, headers, _ = get(port, "/worker.mjs")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    status, headers, body = get(port, "/py/pando/module.py")
    assert status == 200 and b"PROTOCOL_KEY" in body


def test_etag_revalidation_answers_304(port: int) -> None:
    status, headers, _ = get(port, "/volunteer.js")
    assert status == 200 and headers["cache-control"] == "no-cache"
    status, _, body = get(port, "/volunteer.js", {"If-None-Match": headers["etag"]})
    assert status == 304 and body == b""


def test_pyodide_wasm_is_served_for_streaming_compilation_and_revalidates(port: int) -> None:
    if assets.missing_pyodide():
        pytest.skip("Pyodide is not installed in pando/web/node_modules (make install)")
    path = "/node_modules/pyodide/pyodide.asm.wasm"
    status, headers, body = get(port, path)
    # WebAssembly.instantiateStreaming accepts nothing but application/wasm.
    assert status == 200 and headers["content-type"] == "application/wasm" and body[:4] == b"\0asm"
    assert headers["cache-control"] == "no-cache"
    # A body-less 304 keeps the browser's cached copy, and with it the code compiled from it.
    status, _, body = get(port, path, {"If-None-Match": headers["etag"]})
    assert status == 304 and body == b""


@pytest.mark.parametrize(
    "path",
    ["/../setup.cfg", "/%2e%2e/setup.cfg", "/..%2f..%2fetc/passwd", "/py/pando/cli.py", "/nothing.js", "/a%00b"],
)
def test_nothing_outside_the_web_folder(port: int, path: str) -> None:
    status, _, body = get(port, path)
    assert status == 404, body


def test_plain_get_on_the_websocket_path_is_not_an_error_page(port: int) -> None:
    status, _, _ = get(port, "/volunteer")
    assert status == 404


def test_a_root_without_pyodide_says_so_at_start_up(procs: Processes, without_pyodide: Path) -> None:
    root = procs.pando(str(EXAMPLES / "square_fast.py"), "--stdin", "--start-idle", stdin=lines(1),
                       command=(sys.executable, "-m", "pando"), cwd=without_pyodide)
    port = root.port  # once it serves: whatever it had to say at start-up is said
    web = without_pyodide / "pando" / "web"
    [warning] = [line for line in root.err.splitlines() if "Pyodide" in line]
    assert root.err.index(warning) < root.err.index("Serving volunteer code at")
    assert warning.startswith("pando: warning: browser volunteers cannot start: Pyodide is not installed in "
                              f"{web / 'node_modules' / 'pyodide'};")
    assert f"run `npm ci` in {web} " in warning
    status, _, _ = get(port, "/node_modules/pyodide/pyodide.mjs")
    assert status == 404
