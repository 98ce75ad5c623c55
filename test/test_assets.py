"""The root's plain HTTP side: the page, its assets, the helper package, and nothing else."""
from __future__ import annotations

import http.client

import pytest

from conftest import EXAMPLES, Processes, lines

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
