"""A mixed tree (--degree) with a Chromium tab as an interior node, across separate hosts.

The root (--degree 1 --global-monitoring, its JSON status log on stderr) takes
one child: a tab that opened its page with #protocol=webrtc;. Native
``pando-volunteer --protocol webrtc`` processes that join after it are passed
down the tree: the first lands under the tab, whose page answers its offer
with an RTCPeerConnection of its own (pando/web/tree.js), the second under
that one. The tab lends them part of what the root lent it and sends their
results up with its own; the output equals --local's. When a tab with a
subtree closes mid-run, the tab below it joins the root again with its own
subtree (nobody below it reconnects) and the run still completes exactly (a
native orphan's re-attachment is test_tree.py's).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from browser_helpers import Chromium, Root, clean_env, local_output, skip_without_browser, volunteer_command, \
    wait_until, write_module
from conftest import slow_module

skip_without_browser("TREE BROWSER TESTS")

if find_spec("aiortc") is None:
    _MESSAGE = ("TREE BROWSER TESTS SKIPPED, the tree is NOT tested with a browser on this machine: "
                "aiortc is not installed (pip install 'aiortc>=1.16,<2')")
    print(f"\n{'!' * 78}\n{_MESSAGE}\n{'!' * 78}", file=sys.stderr)
    warnings.warn(_MESSAGE)
    pytest.skip(_MESSAGE, allow_module_level=True)

from playwright.sync_api import Page  # noqa: E402

from netns import Host, Hosts  # noqa: E402

ROOT_PORT = 8000
JOIN_KEY = "tree-browser-test-join-key-0123456789"
READY_SECONDS = 90

# Slow enough that the tree forms and every node gets a share before the end.
SLOW_SQUARE = slow_module(0.02)


#: The tabs of the running test, for diagnosis.
OPEN_PAGES: list[Page] = []


@pytest.fixture
def tree_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Root]]:
    """``tree_root(host, module, *options)``: a root with --degree 1 --global-monitoring in that host,
    its JSON status log on stderr; stopped at the end."""
    started: list[Root] = []
    OPEN_PAGES.clear()
    monkeypatch.setenv("PANDO_DEBUG", "monitoring")  # the root's, through clean_env

    def start(host: Host, module: Path, *options: str, heartbeat: str = "3000") -> Root:
        (tmp_path / host.name).mkdir(exist_ok=True)
        root = Root(module, tmp_path / host.name, "--bind", host.address, "--join-key", JOIN_KEY, "--degree", "1",
                    "--global-monitoring", "--reporting-interval", "0.5", "--heartbeat", heartbeat, *options,
                    port=ROOT_PORT, prefix=host.command([]), address=host.address)
        started.append(root)
        return root

    try:
        yield start
    finally:
        for root in started:
            root.close()


def start_native(host: Host, root: Root, tmp_path: Path) -> subprocess.Popen[bytes]:
    """``pando-volunteer --protocol webrtc`` in its own host; its stderr in tmp_path/NAME.err."""
    env = {key: value for key, value in clean_env(tmp_path).items() if key != "PANDO_DEBUG"}
    with (tmp_path / f"{host.name}.err").open("wb") as err:
        return host.popen([*volunteer_command(), f"{root.url}#key={JOIN_KEY};", "--workers", "1", "--name", host.name,
                           "--protocol", "webrtc"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                          env=env, cwd=tmp_path)


def statuses(root: Root) -> list[dict[str, Any]]:
    return [json.loads(line) for line in root.stderr.text.splitlines() if line.startswith("{")]


def wait_for_status(root: Root, check: Callable[[dict[str, Any]], bool], what: str,
                    timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for status in reversed(statuses(root)[-5:]):
            if check(status):
                return status
        if root.process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"no status showed {what}; the last: {statuses(root)[-1:]}\n{diagnosis(root)}")


def diagnosis(root: Root) -> str:
    """What the root said besides its statuses, and what every tab logged."""
    said = "\n".join(line for line in root.stderr.text.splitlines() if not line.startswith("{"))
    logs = []
    for page in OPEN_PAGES:
        try:
            logs.append(f"--- the log of the tab at {page.url}:\n{page.inner_text('#log')}")
        except Exception as error:  # noqa: BLE001 -- a closed tab
            logs.append(f"--- a tab's log is gone: {error}")
    return f"--- the root said:\n{said[-4000:]}\n" + "\n".join(logs)


def rows_by_name(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in status["devices"]}


def tab_url(root: Root, device: str) -> str:
    return f"{root.url}#protocol=webrtc;key={JOIN_KEY};device={device};workers=1;"


def wait_ready(page: Page) -> None:
    wait_until(lambda: page.evaluate("pando.pool ? pando.pool.readyCount : 0") >= 1, READY_SECONDS,
               "the tab's Pyodide worker to be ready")


def open_tab(root: Root, host: Host, chromium_in: Callable[[Host], Chromium], name: str) -> tuple[Page, str]:
    """A tab named ``name`` in ``host`` that joins over WebRTC; its node id once its worker is ready."""
    page = chromium_in(host).open(tab_url(root, name))
    OPEN_PAGES.append(page)
    wait_ready(page)
    return page, page.evaluate("pando.node")


def add_natives(root: Root, hosts: Hosts, tmp_path: Path, names: tuple[str, ...], nodes: int,
                ) -> dict[str, subprocess.Popen[bytes]]:
    """Native volunteers, one at a time: each join sees the statuses of the last (``nodes`` in the tree before)."""
    natives = {}
    for count, name in enumerate(names, start=nodes + 1):
        natives[name] = start_native(hosts.add(name), root, tmp_path)
        wait_for_status(root, lambda s, count=count: s["tree"]["nodes"] == count, f"{count} nodes in the tree")
    return natives


def form_chain(root: Root, hosts: Hosts, chromium_in: Callable[[Host], Chromium], tmp_path: Path,
               ) -> tuple[Page, str, dict[str, subprocess.Popen[bytes]], dict[str, Any]]:
    """root → tab → n1 → n2: the tab joins first, then each native volunteer in turn."""
    page, tab_id = open_tab(root, hosts.add("tab"), chromium_in, "tab")
    wait_for_status(root, lambda s: s["tree"]["nodes"] == 1 and rows_by_name(s).get("tab", {}).get("id") == tab_id,
                    "the tab as the root's child")
    natives = add_natives(root, hosts, tmp_path, ("n1", "n2"), 1)
    chain = wait_for_status(root, lambda s: {"tab", "n1", "n2"} <= rows_by_name(s).keys(), "every row")
    return page, tab_id, natives, chain


@pytest.mark.timeout(300)
def test_a_tab_relays_for_native_volunteers_that_join_under_it(tmp_path: Path, hosts: Hosts, tree_root,
                                                               chromium_in) -> None:
    # The module squares with a file beside it: the natives get that file from the tab's module frames.
    write_module(tmp_path, "helper.py", "def square(x):\n    return x * x\n")
    module = write_module(tmp_path, "slow.py", SLOW_SQUARE.replace("import pando", "import helper, pando")
                          .replace("return x * x", "return helper.square(x)"))
    items = [str(n) for n in range(600)]
    expected = local_output(module, items, tmp_path)
    root = tree_root(hosts.add("root"), module)
    page, tab_id, natives, chain = form_chain(root, hosts, chromium_in, tmp_path)

    rows = rows_by_name(chain)
    # The root holds one child (--degree 1), the tab; the first native hangs under the tab, the next under it.
    assert rows["tab"]["id"] == tab_id and rows["tab"]["parent"] is None and rows["tab"]["depth"] == 1, rows
    assert rows["tab"]["nodes"] == 3 and rows["tab"]["subtree_workers"] == 3, rows
    assert rows["n1"]["parent"] == tab_id and rows["n1"]["depth"] == 2, rows
    assert rows["n2"]["parent"] == rows["n1"]["id"] and rows["n2"]["depth"] == 3, rows
    assert chain["tree"] == {"nodes": 3, "children": 1, "depth": 3, "hidden": 0}, chain["tree"]
    log = page.inner_text("#log")
    assert "a node of the tree at depth 1, taking up to 1 child(ren)" in log, log
    wait_until(lambda: page.is_visible("#relaying") and page.text_content("#relaying dd") == "2 devices", 5,
               "the tab to say it relays for 2 devices")

    root.feed(items)
    assert root.wait(180) == 0, diagnosis(root)
    assert root.output == expected
    # Every node computed a share: the natives' results went up through the tab.
    done = [s for s in statuses(root) if {"tab", "n1", "n2"} <= rows_by_name(s).keys()][-1]
    shares = {name: row["items"] for name, row in rows_by_name(done).items()}
    assert all(shares[name] > 0 for name in ("n1", "n2")), shares
    assert shares["tab"] > shares["n1"] > shares["n2"], shares  # each row counts its subtree's results
    wait_until(lambda: page.evaluate("pando.state") == "done", 20, "the tab to say the job is over")
    # The tab told its child the job is over, and that one its own.
    for name, process in natives.items():
        assert process.wait(30) == 0, (tmp_path / f"{name}.err").read_text()
        assert "the job is over" in (tmp_path / f"{name}.err").read_text()


@pytest.mark.timeout(300)
def test_a_tab_refuses_a_child_without_the_join_key(tmp_path: Path, hosts: Hosts, tree_root, chromium_in) -> None:
    """The rendezvous never sees the key: the node a joiner lands under checks it, a tab too."""
    module = write_module(tmp_path, "slow.py", SLOW_SQUARE)
    # The default heartbeat: a tab slowed by a loaded machine must not be dropped, leaving the
    # root room to take (and refuse) the intruder itself.
    root = tree_root(hosts.add("root"), module, heartbeat="30000")
    page, tab_id = open_tab(root, hosts.add("tab"), chromium_in, "tab")
    wait_for_status(root, lambda s: s["tree"]["nodes"] == 1, "the tab as the root's child")
    host = hosts.add("intruder")
    with (tmp_path / "intruder.err").open("wb") as err:
        intruder = host.popen([*volunteer_command(), f"{root.url}#key=not-the-runs-join-key-at-all;", "--workers", "1", "--name",
                               "intruder", "--protocol", "webrtc"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=err, env=clean_env(tmp_path), cwd=tmp_path)
    assert intruder.wait(60) == 2
    said = (tmp_path / "intruder.err").read_text()
    assert "refused this volunteer: wrong or missing join key" in said, said
    try:
        wait_until(lambda: "refused a child: wrong or missing join key" in page.inner_text("#log"), 10,
                   "the tab to log the refusal")
    except AssertionError as error:
        raise AssertionError(f"{error}; the intruder said:\n{said}\n{diagnosis(root)}") from None
    # Nothing of it reached the tree, and the tab still takes a child with the key.
    assert all(s["tree"]["nodes"] == 1 for s in statuses(root)[-3:])
    add_natives(root, hosts, tmp_path, ("n1",), 1)
    rows = rows_by_name(statuses(root)[-1])
    assert rows["n1"]["parent"] == tab_id, rows


@pytest.mark.timeout(360)
def test_a_tab_under_a_tab_joins_the_root_again_with_its_subtree(tmp_path: Path, hosts: Hosts, tree_root,
                                                                  chromium_in) -> None:
    """root → tab a → tab b → n1; tab a closes mid-run: tab b (a page this time) forgets its lease, resets n1,
    and joins the root again bringing n1, which keeps its link."""
    module = write_module(tmp_path, "slow.py", SLOW_SQUARE)
    items = [str(n) for n in range(1500)]
    expected = local_output(module, items, tmp_path)
    root = tree_root(hosts.add("root"), module)
    page_a, a_id = open_tab(root, hosts.add("taba"), chromium_in, "tab a")
    wait_for_status(root, lambda s: s["tree"]["nodes"] == 1, "tab a as the root's child")
    page_b, b_id = open_tab(root, hosts.add("tabb"), chromium_in, "tab b")
    wait_for_status(root, lambda s: s["tree"]["nodes"] == 2, "tab b under tab a")
    natives = add_natives(root, hosts, tmp_path, ("n1",), 2)
    rows = rows_by_name(wait_for_status(root, lambda s: {"tab a", "tab b", "n1"} <= rows_by_name(s).keys(),
                                        "every row"))
    assert rows["tab a"]["id"] == a_id and rows["tab a"]["parent"] is None, rows
    assert rows["tab b"]["id"] == b_id and rows["tab b"]["parent"] == a_id and rows["tab b"]["depth"] == 2, rows
    assert rows["n1"]["parent"] == b_id and rows["n1"]["depth"] == 3, rows
    assert "a node of the tree at depth 2" in page_b.inner_text("#log")

    root.feed(items)
    wait_for_status(root, lambda s: s["items"]["written"] >= 200 and rows_by_name(s).get("n1", {}).get("items", 0) > 0,
                    "work done everywhere")
    page_a.close()
    healed = wait_for_status(
        root, lambda s: "tab a" not in rows_by_name(s) and rows_by_name(s).get("tab b", {}).get("parent", "") is None
        and rows_by_name(s).get("n1", {}).get("parent") == b_id, "tab b back under the root with n1", timeout=90)
    assert rows_by_name(healed)["tab b"]["nodes"] == 2 and healed["tree"]["nodes"] == 2, healed
    assert root.wait(180) == 0, diagnosis(root)
    assert root.output == expected
    log_b = page_b.inner_text("#log")
    assert "back in the tree at depth 1, with 1 device(s) below" in log_b, log_b
    n1_log = (tmp_path / "n1.err").read_text()
    assert "joined again" not in n1_log, n1_log  # tab b kept its link to n1
    wait_until(lambda: page_b.evaluate("pando.state") == "done", 20, "tab b to say the job is over")
    assert natives["n1"].wait(30) == 0, n1_log


FAILING = slow_module(0.02, fails_on=250)


@pytest.mark.timeout(300)
def test_an_item_failing_below_the_tab_fails_the_run_as_local_does(tmp_path: Path, hosts: Hosts, tree_root,
                                                                   chromium_in) -> None:
    """The error, with its traceback, goes up through the tab (from its own workers or its child's)."""
    module = write_module(tmp_path, "failing.py", FAILING)
    items = [str(n) for n in range(600)]
    expected = local_output(module, items, tmp_path, status=1)
    root = tree_root(hosts.add("root"), module)
    page, tab_id = open_tab(root, hosts.add("tab"), chromium_in, "tab")
    wait_for_status(root, lambda s: s["tree"]["nodes"] == 1, "the tab as the root's child")
    add_natives(root, hosts, tmp_path, ("n1",), 1)
    root.feed(items)
    assert root.wait(180) == 1, diagnosis(root)
    assert root.output == expected  # every result before the failed item, as --local writes
    said = root.stderr.text
    assert "ValueError: no square for 250 here" in said and "Traceback" in said, said[-3000:]
