"""The tree (--degree) with native volunteers on separate hosts: it forms, it relays, it heals.

Every volunteer joins the root's own rendezvous over WebRTC; the root takes
--degree of them and passes the others down. The root's JSON status log
(PANDO_DEBUG=monitoring, with --global-monitoring) shows the tree.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any

import pytest

from conftest import KEY, PANDO, VOLUNTEER, Processes, RootProcess, lines, slow_module
from netns import Host, Hosts

pytestmark = pytest.mark.timeout(240)

SLOW = slow_module(0.05, sleep=True)


def start_root(procs: Processes, host: Host, module: str, items: bytes, *args: str) -> RootProcess:
    out = procs.tmp / "root.out"
    with out.open("wb") as stdout:
        popen = host.popen([PANDO, module, "--stdin", "--start-idle", "--port", "7000", "--reporting-interval", "0.5",
                            *args], stdin=subprocess.PIPE, stdout=stdout, stderr=subprocess.PIPE,
                           env=procs.env(PANDO_DEBUG="monitoring"))
    assert popen.stdin is not None
    popen.stdin.write(items)
    popen.stdin.close()
    return RootProcess(popen, out)


def start_volunteer(procs: Processes, host: Host, root: Host) -> subprocess.Popen[bytes]:
    with (procs.tmp / f"{host.name}.err").open("wb") as err:
        return host.popen([VOLUNTEER, f"http://{root.address}:7000/#key={KEY};", "--workers", "1", "--name", host.name,
                           "--protocol", "webrtc"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                          env=procs.env())


def statuses(root: RootProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in root.err.splitlines() if line.startswith("{")]


def wait_for_status(root: RootProcess, check: Any, timeout: float = 60, what: str = "") -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for status in reversed(statuses(root)):
            if check(status):
                return status
        if root.popen.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"no status showed {what}; the last: {statuses(root)[-1:]}\n{root.err[-3000:]}")


def test_degree_2_seven_volunteers_an_interior_death(procs: Processes, hosts: Hosts) -> None:
    module = procs.tmp / "slow.py"
    module.write_text(SLOW)
    items = lines(*range(900))
    root_host = hosts.add("root")
    root = start_root(procs, root_host, str(module), items, "--degree", "2", "--global-monitoring",
                      "--heartbeat", "2000")
    root.wait_for_stderr("Serving volunteer code at")
    # A crowd, all at once: joins that find no room yet wait at a node for its children's
    # statuses instead of being refused, so nobody has to try again.
    volunteers = {f"v{n}": start_volunteer(procs, hosts.add(f"v{n}"), root_host) for n in range(1, 8)}
    full = wait_for_status(root, lambda s: s["tree"]["nodes"] == 7, what="7 volunteers in the tree")
    for name in volunteers:
        said = (procs.tmp / f"{name}.err").read_text()
        assert "retrying" not in said and "could not join" not in said, said
    direct = [d for d in full["devices"] if d["parent"] is None]
    assert len(direct) == 2, direct  # the root holds --degree children, no more
    rows = {d["id"]: d for d in full["devices"]}
    assert len(rows) == 7 and all(d["parent"] is None or d["parent"] in rows for d in rows.values())
    children: dict[str | None, int] = {}
    for row in rows.values():
        children[row["parent"]] = children.get(row["parent"], 0) + 1
    assert max(children.values()) <= 2, children  # every node holds at most --degree
    # Kill an interior volunteer: its children re-attach, each with its subtree.
    victim = next(d for d in direct if d["nodes"] > 1)
    orphans = {d["name"] for d in rows.values() if d["parent"] == victim["id"]}
    grandchildren = {d["name"] for d in rows.values() if d["parent"] in {rows_id for rows_id, row in rows.items()
                                                                        if row["name"] in orphans}}
    volunteers[victim["name"]].send_signal(signal.SIGKILL)
    healed = wait_for_status(
        root, lambda s: s["tree"]["nodes"] == 6 and victim["id"] not in {d["id"] for d in s["devices"]}
        and all(d["parent"] != victim["id"] for d in s["devices"]), what="the orphans re-attached")
    assert {d["name"] for d in healed["devices"]} == {f"v{n}" for n in range(1, 8)} - {victim["name"]}
    assert root.wait(180) == 0, root.err[-3000:]
    assert root.out == procs.local(str(module), items)
    for name in orphans:
        assert "joined again" in (procs.tmp / f"{name}.err").read_text()
    for name in grandchildren:  # below the orphans nobody reconnects
        assert "joined again" not in (procs.tmp / f"{name}.err").read_text()


def test_without_global_monitoring_the_root_lists_its_children_with_subtree_totals(
        procs: Processes, hosts: Hosts) -> None:
    module = procs.tmp / "slow.py"
    module.write_text(SLOW)
    items = lines(*range(300))
    root_host = hosts.add("root")
    root = start_root(procs, root_host, str(module), items, "--degree", "1")
    root.wait_for_stderr("Serving volunteer code at")
    for number in range(1, 4):
        start_volunteer(procs, hosts.add(f"v{number}"), root_host)
        time.sleep(0.3)
    chain = wait_for_status(root, lambda s: s["tree"]["nodes"] == 3, what="a chain of 3 volunteers")
    assert [(d["parent"], d["depth"], d["nodes"], d["subtree_workers"]) for d in chain["devices"]] == [(None, 1, 3, 3)]
    assert chain["tree"]["depth"] == 1 and chain["volunteers"]["now"] == 3
    assert root.wait(120) == 0, root.err[-3000:]
    assert root.out == procs.local(str(module), items)


def test_a_relay_passes_the_module_files_down(procs: Processes, hosts: Hosts) -> None:
    # The module imports a sibling file: the second volunteer, under the first, gets it from its relay.
    (procs.tmp / "helper.py").write_text("def square(x):\n    return x * x\n")
    module = procs.tmp / "slow.py"
    module.write_text(SLOW.replace("return x * x", "return helper.square(x)").replace("import pando",
                                                                                     "import helper\nimport pando"))
    items = lines(*range(100))
    root_host = hosts.add("root")
    root = start_root(procs, root_host, str(module), items, "--degree", "1", "--global-monitoring")
    root.wait_for_stderr("volunteers get slow.py and 1 file")
    start_volunteer(procs, hosts.add("v1"), root_host)
    wait_for_status(root, lambda s: s["tree"]["nodes"] == 1, what="the first volunteer")
    start_volunteer(procs, hosts.add("v2"), root_host)
    chain = wait_for_status(root, lambda s: s["tree"]["nodes"] == 2, what="the second volunteer under the first")
    assert {(d["name"], d["depth"]) for d in chain["devices"]} == {("v1", 1), ("v2", 2)}
    assert root.wait(120) == 0, root.err[-3000:]
    assert root.out == procs.local(str(module), items)
    assert "cannot run the module" not in (procs.tmp / "v2.err").read_text()
    assert any(d["name"] == "v2" and d["items"] > 0 for s in statuses(root) for d in s.get("devices", [])), \
        "the volunteer under the relay computed nothing"
