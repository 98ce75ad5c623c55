"""Workload 11, the tree (--degree D): real trees of tens to hundreds of volunteers, simulated crowds of thousands.

    python bench/tree.py quick|full        (this workload alone, through run.py)

Two methods, and every figure says which one it comes from:

**Real** (``real``): a real root (``pando MODULE --stdin --start-idle --degree D
--global-monitoring --heartbeat H``, batch size 1, PANDO_DEBUG=monitoring for
its JSON status) and N real volunteers (``pando.node.Node``, unmodified) joining
its own ``/rendezvous/signal`` over real data channels. D − 1 (at least 2) of
them are *victim candidates*, each in a process of its own, started
``head_start_s`` before the others (so they hang under the root and get large
subtrees); the other N − D + 1, the crowd, start at once (t0) from
bench/tree_swarm.py processes (``≤ nodes_per_process`` each; one asyncio loop
per process; worker processes emulated: ``x * x`` answered T s after the item
starts; see that file). Like bench/webrtc.py it runs under ``unshare -n``
with 127.0.0.2 on loopback (aioice ignores 127.0.0.1); ports 19700-19799.

- root costs, before anyone joins: one volunteer joins and leaves (the root
  imports aiortc on its first offer, a fraction of a second of CPU), then the
  root's CPU per signal socket (100 sockets opened, welcomed and closed one
  after another, less its idle rate);
- join: t0 → each crowd volunteer's module frame (it is in the tree); time to
  95% and 100% of the crowd; attempts (refusals are retried with node.py's
  back-off); the root's CPU over the join phase, less its idle-tree rate
  (measured next, 2.5 s with the tree formed and no items), ÷ attempts (the
  candidates' included);
- root links: direct children of the root in its status (the most seen), and
  the tree's shape from every node's own record (children per node, depths);
- steady efficiency: items go in only now (a backlog on the root's stdin);
  output lines between t_a (items + max(2T, 2 s)) and t_b = t_a + ``steady_s``,
  ÷ (t_b − t_a) ÷ (N / T); root CPU per item over that window, gross and net of
  the idle-tree rate (/proc); the swarm processes' CPU share (≈ 1: the
  emulation, not the tree, is the limit); per depth, how long a worker waited
  for its next item (the refill gap);
- re-attach: at t_b the candidate with the largest subtree (from the root's
  rows) gets SIGKILL; each orphan (a child of the victim) → its next module
  frame, in seconds and heartbeats; every other node must not re-attach (those
  below the orphans keep their links);
- output: every line checked (i²), in order.

On 2 cores the root, the swarm and every node's aiortc share the CPU: real
runs are CPU-bound well before a real crowd of separate devices would be.

**Simulated** (``sim``, bench/tree_sim.py): crowds of 1,000 and 10,000 in a
degree-D tree on modelled time, with the product's own ``Overlay`` per node
(routing and its races) and ``Lender`` per node (lending), costs calibrated
here: one offer, one answer, answer → open, one frame's latency
(``tree_swarm.py --calibrate``: both ends in one process, idle), the root's
CPU per join attempt and per item (from the real runs), plus an assumed
one-way network latency per scenario. Join time, root links, tree shape,
steady efficiency, root CPU demand, and re-attach (p95 in heartbeats) are
reported per scenario; the same model at the real runs' size is shown beside
the real figures as a check.
"""
from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

from common import (BENCH, KEY, PANDO, PYTHON, LineClock, Procs, cpu_seconds, fmt, log, machine_cpu, percentile,
                    stderr_collector, summary, table, wait_rusage)
import scaling
import tree_sim
from pando.pace import FLUSH_SECONDS
import webrtc

ADDR = webrtc.ADDR
PORTS = (19700, 19799)
SWARM = str(BENCH / "tree_swarm.py")
GOALS = {"join_10000_s": 10.0, "eff_1s": 0.95, "eff_100ms": 0.90, "reattach_p95_hb": 3.0, "root_links": 10}
NETNS_NOTE = webrtc.NAMESPACE_NOTE.replace("19600", "19700")


# -- the namespace (as bench/webrtc.py) ------------------------------------


def run(params: dict[str, Any]) -> dict[str, Any]:
    """The workload: real runs under ``unshare -n`` in a child process, then the simulations here."""
    real: dict[str, Any] | None = None
    if params.get("real"):
        real = (webrtc.namespaced("tree", BENCH / "tree.py", params, params["real"].get("timeout_s", 1800))
                if not webrtc.in_namespace() else run_inside(params))
    out: dict[str, Any] = {"params": params, "real": real}
    if params.get("sim"):
        out["sim"] = simulate(params["sim"], real)
    return out


free_port = webrtc.PortRange(*PORTS, ADDR).free


# -- pieces of a real run --------------------------------------------------


class Feeder:
    """Keeps the root's stdin ``backlog`` items ahead of its output, until :meth:`stop` closes it."""

    def __init__(self, stdin: IO[bytes], clock: LineClock, backlog: int) -> None:
        self._stdin = stdin
        self._clock = clock
        self._backlog = backlog
        self.written = 0
        self._go = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def start(self) -> None:
        self._go.set()

    def _run(self) -> None:
        try:
            while not self._go.wait(0.05):
                if self._stop.is_set():
                    return
            while not self._stop.is_set():
                want = self._clock.count + self._backlog - self.written
                if want > 0:
                    chunk = "".join(f"{i}\n" for i in range(self.written, self.written + want))
                    self._stdin.write(chunk.encode())
                    self._stdin.flush()
                    self.written += want
                self._stop.wait(0.05)
        except (BrokenPipeError, ValueError, OSError):
            pass
        finally:
            try:
                self._stdin.close()
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()
        self._go.set()
        self._thread.join(5)


class Statuses:
    """The root's JSON status lines, with the monotonic time each arrived."""

    def __init__(self, lines: Any) -> None:
        self._lines = lines

    def all(self) -> list[tuple[float, dict[str, Any]]]:
        out = []
        for when, line in zip(list(self._lines.times), list(self._lines)):
            if line.startswith("{"):
                try:
                    out.append((when, json.loads(line)))
                except ValueError:
                    continue
        return out

    def log(self) -> list[str]:
        return [line.rstrip() for line in list(self._lines) if not line.startswith("{")]


def root_links(status: dict[str, Any]) -> int:
    return sum(1 for d in status["devices"] if d["parent"] is None and not d["local"])


def start_swarm(procs: Procs, url: str, nodes: int, task: float, first: int, sources: str, prefix: str,
                start_at: float | None = None) -> tuple[subprocess.Popen[bytes], list[str]]:
    args = [PYTHON, SWARM, url, KEY, "--nodes", str(nodes), "--task", str(task), "--first-index", str(first),
            "--sources", sources, "--name-prefix", prefix, "--announce", "--timeout", "900"]
    if start_at is not None:
        args += ["--start-at", repr(start_at)]
    popen = procs.popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return popen, stderr_collector(popen)


def wait_line(lines: list[str], test: Any, timeout: float, popen: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        current = list(lines)
        for line in current[seen:]:
            if test(line):
                return line
        seen = len(current)
        if popen.poll() is not None:
            raise RuntimeError(f"exited with {popen.returncode}: {''.join(current[-5:])}")
        time.sleep(0.02)
    raise RuntimeError(f"timed out; last lines: {''.join(list(lines)[-5:])}")


def joined_ids(lines: list[str]) -> dict[str, float]:
    out = {}
    for line in list(lines):
        if line.startswith('{"joined"'):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            out[entry["joined"]] = entry["at"]
    return out


def collect_swarm(popen: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    try:
        out, _ = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        popen.send_signal(signal.SIGTERM)  # it prints what it has, then exits
        try:
            out, _ = popen.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            return {"records": [], "error": "no answer to SIGTERM"}
    try:
        return json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"records": [], "error": f"exit {popen.returncode}, no JSON"}


def sample(root_pid: int, swarm_pids: list[int], clock: LineClock) -> dict[str, Any]:
    busy, total = machine_cpu()
    return {"t": time.monotonic(), "lines": clock.count, "root_cpu": cpu_seconds(root_pid),
            "swarm_cpu": [cpu_seconds(pid) for pid in swarm_pids], "machine_busy": busy, "machine_total": total}


def parent_at(record: dict[str, Any], when: float) -> tuple[str | None, int | None]:
    """A node's parent id and depth at ``when`` (its last attach before then)."""
    current: tuple[str | None, int | None] = (None, None)
    for at, parent, depth in record["attaches"]:
        if at <= when:
            current = (parent, depth)
    return current


# -- one real run ----------------------------------------------------------


def probe_signal_sockets(port: int, count: int) -> int:
    """Open ``count`` signal sockets to the root one after another (welcome, then close); how many worked."""
    from websockets.sync.client import connect

    ok = 0
    for _ in range(count):
        try:
            with connect(f"ws://{ADDR}:{port}/rendezvous/signal", open_timeout=10, close_timeout=2, proxy=None,
                         compression=None) as ws:
                ws.recv(timeout=10)
                ok += 1
        except Exception:  # noqa: BLE001 - counted
            pass
    return ok


def run_real(n: int, task: float, degree: int, p: dict[str, Any]) -> dict[str, Any]:
    heartbeat_ms, batch = p["heartbeat_ms"], p.get("batch", 1)
    h = heartbeat_ms / 1000
    candidates = max(2, degree - 1)  # the root keeps a slot for the crowd: its own accounting is measured too
    crowd_n = n - candidates
    procs = Procs()
    out: dict[str, Any] = {"n": n, "task_s": task, "degree": degree, "heartbeat_ms": heartbeat_ms, "batch": batch,
                           "candidates": candidates, "loadavg_at_start": os.getloadavg()}
    try:
        port = free_port()
        root = procs.popen([PANDO, scaling.module_for(task), "--stdin", "--start-idle", "--degree", str(degree),
                            "--global-monitoring", "--heartbeat", str(heartbeat_ms), "--reporting-interval", "1",
                            "--batch-size", str(batch), "--bind", ADDR, "--port", str(port)],
                           env=procs.env(PANDO_DEBUG="monitoring"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        err = stderr_collector(root)
        statuses = Statuses(err)
        assert root.stdin is not None and root.stdout is not None
        clock = LineClock(root.stdout, keep=True)
        feeder = Feeder(root.stdin, clock, backlog=3 * n * batch + 50)  # items only once the tree has formed
        webrtc.wait_port(port, popen=root, err=err)
        url = f"ws://{ADDR}:{port}/"
        # One join and leave first: the root imports aiortc on its first offer; not in the figures below.
        warm = procs.popen([PYTHON, SWARM, url, KEY, "--nodes", "0", "--task", "1", "--warm"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        warm_out, warm_err = warm.communicate(timeout=60)
        try:
            out["warm_up"] = json.loads(warm_out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            out["warm_up"] = {"error": warm_err.decode()[-500:]}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # its session has ended: the root holds no child
            done = statuses.all()
            if done and done[-1][0] > time.monotonic() - 1.5 and done[-1][1]["tree"]["nodes"] == 0:
                break
            time.sleep(0.1)
        # The root's CPU for one signal socket (welcome, no offer): what a refused or limited attempt costs it.
        time.sleep(0.5)
        c0, t = cpu_seconds(root.pid), time.monotonic()
        time.sleep(1.0)
        idle_rate = (cpu_seconds(root.pid) - c0) / (time.monotonic() - t)
        c0, t = cpu_seconds(root.pid), time.monotonic()
        probes = probe_signal_sockets(port, p.get("signal_probes", 100))
        out["root_cpu_per_signal_socket_s"] = ((cpu_seconds(root.pid) - c0 - idle_rate * (time.monotonic() - t))
                                               / max(1, probes))
        # Victim candidates, each alone in a process (one of them gets SIGKILL later), start just before the crowd.
        cands = [start_swarm(procs, url, 1, task, crowd_n + k, f"127.0.{200 + k}", f"candidate{k}")
                 for k in range(candidates)]
        per = math.ceil(crowd_n / math.ceil(crowd_n / p["nodes_per_process"]))
        swarms = [start_swarm(procs, url, min(per, crowd_n - first), task, first, f"127.0.{1 + k}", "tree")
                  for k, first in enumerate(range(0, crowd_n, per))]
        cand_ids = []
        for popen, lines in cands + swarms:
            wait_line(lines, lambda line: line.startswith("ready"), 60, popen)
        for popen, lines in cands:
            cand_ids.append(json.loads(wait_line(lines, lambda line: line.startswith('{"ids"'), 5, popen))["ids"][0])
        pids = [popen.pid for popen, _ in swarms] + [popen.pid for popen, _ in cands]
        t0 = time.monotonic() + 0.5
        for k, (popen, _) in enumerate(cands + swarms):
            assert popen.stdin is not None
            popen.stdin.write(f"{t0 - p['head_start_s'] if k < candidates else t0!r}\n".encode())
            popen.stdin.flush()
        s0 = sample(root.pid, pids, clock)
        s0["t"] = t0 - p["head_start_s"]
        deadline = t0 + p["join_timeout_s"]
        while time.monotonic() < deadline:
            if sum(len(joined_ids(lines)) for _, lines in swarms + cands) >= n:
                break
            time.sleep(0.05)
        t_joined = time.monotonic()
        s_join = sample(root.pid, pids, clock)
        all_joined = sum(len(joined_ids(lines)) for _, lines in swarms + cands) >= n
        out["all_joined"] = all_joined
        out["joined_per_process"] = [len(joined_ids(lines)) for _, lines in swarms + cands]
        if not all_joined:
            out["not_joined_stderr"] = [[line.strip() for line in list(lines)[-4:]] for _, lines in swarms + cands]
        out["join_phase_s"] = t_joined - s0["t"]
        out["root_cpu_join_s"] = s_join["root_cpu"] - s0["root_cpu"]
        out["swarm_cpu_share_join"] = ((sum(s_join["swarm_cpu"]) - sum(s0["swarm_cpu"])) / max(1e-9, t_joined - s0["t"])
                                       / len(swarms))
        log(f"tree real N={n} T={task} D={degree}: {'all' if all_joined else 'NOT all'} joined "
            f"{t_joined - t0:.1f} s after t0")
        # The formed tree, idle (no items yet): the root's CPU for heartbeats, statuses and monitoring alone.
        time.sleep(1.5)
        si = sample(root.pid, pids, clock)
        time.sleep(p.get("idle_s", 2.5))
        sj = sample(root.pid, pids, clock)
        out["root_idle_cpu_share"] = (sj["root_cpu"] - si["root_cpu"]) / (sj["t"] - si["t"])
        out["root_cpu_join_net_s"] = out["root_cpu_join_s"] - out["root_idle_cpu_share"] * out["join_phase_s"]
        feeder.start()
        time.sleep(max(2 * task, 2.0))
        sa = sample(root.pid, pids, clock)
        time.sleep(p["steady_s"])
        sb = sample(root.pid, pids, clock)
        dt = sb["t"] - sa["t"]
        items = sb["lines"] - sa["lines"]
        share = (sb["root_cpu"] - sa["root_cpu"]) / dt
        out["steady"] = {
            "t_a": sa["t"], "t_b": sb["t"], "seconds": dt, "lines": items,
            "items_per_s": items / dt, "ideal_items_per_s": n / task, "efficiency": items / dt / (n / task),
            "root_cpu_per_item_s": share * dt / items if items else None,
            "root_cpu_per_item_net_s": (share - out["root_idle_cpu_share"]) * dt / items if items else None,
            "root_cpu_share": share,
            "swarm_cpu_share": [(b - a) / dt for a, b in zip(sa["swarm_cpu"], sb["swarm_cpu"])][:len(swarms)],
            "machine_busy_share": (sb["machine_busy"] - sa["machine_busy"]) / max(1e-9, sb["machine_total"]
                                                                                   - sa["machine_total"]),
            "loadavg": os.getloadavg(),
        }
        before_kill = [s for _, s in statuses.all()]
        out["root_links_max"] = max((root_links(s) for s in before_kill), default=None)
        last: dict[str, Any] = before_kill[-1] if before_kill else {"devices": [], "tree": {"nodes": None}}
        out["root_links_at_kill"] = root_links(last)
        out["root_status_nodes_at_kill"] = last["tree"]["nodes"]
        # The victim: the candidate with the largest subtree, from the root's rows (global monitoring).
        sizes = subtree_sizes(last["devices"])
        victim_index = max(range(candidates), key=lambda k: sizes.get(cand_ids[k], 0))
        victim_id = cand_ids[victim_index]
        vrow: dict[str, Any] = next((d for d in last["devices"] if d["id"] == victim_id), {"parent": None, "depth": 1})
        out["victim_subtree_by_root"] = sizes.get(victim_id)
        out["victim_depth"] = vrow["depth"]
        t_kill = time.monotonic()
        os.killpg(cands[victim_index][0].pid, signal.SIGKILL)
        heal_deadline = t_kill + p["heal_limit_hb"] * h
        healed_at = None
        gone_at = None
        while time.monotonic() < heal_deadline:
            for when, s in statuses.all():
                if when <= t_kill:
                    continue
                ids = {d["id"] for d in s["devices"]}
                if gone_at is None and victim_id not in ids:
                    gone_at = when
                if (healed_at is None and victim_id not in ids and s["tree"]["nodes"] == n - 1
                        and all(d["parent"] != victim_id for d in s["devices"])):
                    healed_at = when
            if healed_at is not None:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        out["root_drops_victim_s"] = None if gone_at is None else gone_at - t_kill
        out["root_sees_healed_s"] = None if healed_at is None else healed_at - t_kill
        feeder.stop()
        wait_rusage(root, 120)
        clock.join(10)
        out["exit"] = root.returncode
        out["lines"], out["lines_exact"] = webrtc.check_prefix(clock.text())
        out["items_written"] = feeder.written
        results = [collect_swarm(popen, 60) for popen, _ in swarms]
        others = [collect_swarm(popen, 30) for k, (popen, _) in enumerate(cands) if k != victim_index]
        records = [r for res in results for r in res.get("records", [])]
        cand_records = [r for res in others for r in res.get("records", [])]
        out["swarm_errors"] = [res["error"] for res in results + others if "error" in res]
        out["timer_late_p99_s"] = max((res.get("timer_late_p99_s") or 0) for res in results) if results else None
        out["root_log"] = [line for line in statuses.log() if "Serving" not in line and "Monitoring" not in line][-12:]
        out["root_dropped"] = [line for line in statuses.log() if "dropping" in line]
        out.update(analyse(records, cand_records, victim_id, vrow["parent"], vrow["depth"], t0, t_kill, sa["t"],
                           sb["t"], crowd_n, degree, h))
        # The join phase's root CPU served the candidates' joins too (one attempt each: they come to an empty root).
        out["join_attempts_total"] = out["join"]["attempts"] + candidates
        return out
    finally:
        procs.cleanup()


def subtree_sizes(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Each row's subtree size (itself included), from the parent links of the root's rows."""
    parent = {d["id"]: d["parent"] for d in rows}
    sizes = dict.fromkeys(parent, 0)
    for node in parent:
        seen = set()
        while node is not None and node in sizes and node not in seen:
            seen.add(node)
            sizes[node] += 1
            node = parent[node]
    return sizes


def analyse(records: list[dict[str, Any]], cand_records: list[dict[str, Any]], victim_id: str,
            victim_parent: str | None, victim_depth: int, t0: float, t_kill: float, t_a: float, t_b: float,
            crowd_n: int, degree: int, h: float) -> dict[str, Any]:
    """``records``: the crowd's nodes (joined from t0); ``cand_records``: the candidates that were not killed."""
    out: dict[str, Any] = {}
    crowd = [r for r in records if r["attaches"]]
    first = sorted(r["attaches"][0][0] - t0 for r in crowd)
    need = math.ceil(0.95 * crowd_n)
    attempts = [1 + sum(1 for e in r["events"] if e[1] in ("join_failed", "unreachable") and e[0] < r["attaches"][0][0])
                for r in crowd]
    reasons: dict[str, int] = {}
    for r in records:
        for e in r["events"]:
            if e[1] in ("join_failed", "unreachable") and (not r["attaches"] or e[0] < r["attaches"][0][0]):
                reason = e[2].split(": ", 1)[-1][:70] if len(e) > 2 else e[1]
                reasons[reason] = reasons.get(reason, 0) + 1
    out["join"] = {"joined": len(first), "crowd": crowd_n, "p50_s": percentile(first, 0.5),
                   "to_95pct_s": first[need - 1] if len(first) >= need else None,
                   "to_100pct_s": first[-1] if len(first) == crowd_n else None,
                   "attempts": sum(attempts), "failed_attempts": sum(attempts) - len(first), "reasons": reasons}
    # The tree at t_a (steady), from every node's own record; the victim's is lost with it (its parent: the root).
    crowd = crowd + [r for r in cand_records if r["attaches"]]
    parents: dict[str, str] = {}
    depths: dict[int, int] = {}
    at_depth: dict[str, int] = {}
    for r in crowd:
        parent, depth = parent_at(r, t_a)
        if parent is not None and depth is not None:
            parents[r["id"]] = parent
            depths[depth] = depths.get(depth, 0) + 1
            at_depth[r["id"]] = depth
    root_id = next((parents[i] for i, d in at_depth.items() if d == 1), "")
    parents[victim_id] = victim_parent or root_id
    depths[victim_depth] = depths.get(victim_depth, 0) + 1
    victim_children = [i for i, parent in parents.items() if parent == victim_id]
    kids: dict[str, int] = {}
    for parent in parents.values():
        kids[parent] = kids.get(parent, 0) + 1
    out["shape"] = {"root_links": kids.get(root_id, 0), "max_children": max(kids.values(), default=0),
                    "nodes_over_degree": sum(1 for k in kids.values() if k > degree),
                    "children_per_node_top": sorted(kids.values(), reverse=True)[:8],
                    "depths": {str(d): k for d, k in sorted(depths.items())}, "depth": max(depths, default=0)}
    # Refill gaps by depth in the steady window.
    gaps: dict[int, list[float]] = {}
    for r in crowd:
        depth = at_depth.get(r["id"])
        for when, gap in r.get("gaps", []):
            if t_a <= when <= t_b and depth is not None:
                gaps.setdefault(depth, []).append(gap)
    out["gap_median_by_depth_s"] = {str(d): statistics.median(g) for d, g in sorted(gaps.items())}
    all_gaps = [g for gs in gaps.values() for g in gs]
    out["gap_median_s"] = statistics.median(all_gaps) if all_gaps else None
    # Re-attach: the victim's children at the kill.
    orphans = [r for r in crowd if parent_at(r, t_kill)[0] == victim_id]
    orphan_ids = {r["id"] for r in orphans}
    below: set[str] = set()
    frontier = set(orphan_ids)
    while frontier:
        frontier = {r["id"] for r in crowd if parent_at(r, t_kill)[0] in frontier}
        below |= frontier
    times = []
    detect = []
    refused = 0
    for r in orphans:
        later = [a[0] for a in r["attaches"] if a[0] > t_kill]
        if later:
            times.append(later[0] - t_kill)
        refused += sum(1 for e in r["events"] if t_kill < e[0] and e[1] in ("join_failed", "unreachable")
                       and (not later or e[0] < later[0]))
        lost = [e[0] for e in r["events"] if e[0] > t_kill and e[1] in ("silent", "lost")]
        if lost:
            detect.append(lost[0] - t_kill)
    moved = [r["name"] for r in crowd if r["id"] not in orphan_ids and any(a[0] > t_kill for a in r["attaches"])]
    moved_below = [r["name"] for r in crowd if r["id"] in below and any(a[0] > t_kill for a in r["attaches"])]
    out["reattach"] = {
        "victim_subtree": 1 + len(victim_children) + len(below), "orphans": len(orphans), "reattached": len(times),
        "below_orphans": len(below), "p50_s": percentile(times, 0.5), "p95_s": percentile(times, 0.95),
        "max_s": max(times, default=None),
        "p95_heartbeats": None if not times else percentile(times, 0.95) / h,
        "max_heartbeats": None if not times else max(times) / h,
        "detect_median_s": statistics.median(detect) if detect else None, "refused_attempts": refused,
        "others_reattached": moved, "below_orphans_reattached": moved_below,
    }
    out["node_errors"] = [r["error"] for r in records if "error" in r][:5]
    return out


# -- calibration and the real runs -----------------------------------------


def calibrate(rounds: int) -> dict[str, Any]:
    procs = Procs()
    try:
        popen = procs.popen([PYTHON, SWARM, "-", "-", "--nodes", "0", "--task", "1", "--calibrate", str(rounds)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = popen.communicate(timeout=120)
        result = json.loads(out.decode().strip().splitlines()[-1])
        result["loadavg"] = os.getloadavg()
        return result
    finally:
        procs.cleanup()


def run_inside(params: dict[str, Any]) -> dict[str, Any]:
    p = params["real"]
    log("tree: running " + NETNS_NOTE)
    out: dict[str, Any] = {"namespace": NETNS_NOTE, "versions": webrtc._versions()}
    try:
        out["calibration"] = calibrate(p.get("calibration_rounds", 5))
        c = out["calibration"]
        log(f"tree calibration (idle pair, one process): offer {1000 * c['offer_s']:.1f} ms, answer "
            f"{1000 * c['answer_s']:.1f} ms, answer → open {1000 * c['open_s']:.1f} ms, one frame one way "
            f"{1000 * c['frame_one_way_s']:.2f} ms")
    except Exception as exc:  # noqa: BLE001
        out["calibration"] = {"error": f"{type(exc).__name__}: {exc}"}
    runs = []
    for rep in range(p["reps"]):
        for n, task, degree in p["runs"]:
            try:
                r = run_real(n, task, degree, p)
            except Exception as exc:  # noqa: BLE001 - one broken run is reported, the rest goes on
                r = {"n": n, "task_s": task, "degree": degree, "error": f"{type(exc).__name__}: {exc}"}
            r["rep"] = rep
            runs.append(r)
            log(real_line(r))
    out["runs"] = runs
    return out


def real_line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"tree real N={r['n']} T={r['task_s']}: ERROR {r['error']}"
    j, s, a, sh = r["join"], r["steady"], r["reattach"], r["shape"]
    return (f"tree real N={r['n']} T={r['task_s']}: joined 95% {fmt(j['to_95pct_s'], 2)} s, 100% "
            f"{fmt(j['to_100pct_s'], 2)} s ({j['failed_attempts']} refused attempts); root links max "
            f"{r['root_links_max']}, depth {sh['depth']}, max children {sh['max_children']}; steady "
            f"{100 * s['efficiency']:.1f}% ({s['items_per_s']:.1f}/{s['ideal_items_per_s']:.0f} items/s), root "
            f"{fmt(s['root_cpu_per_item_s'] and 1e6 * s['root_cpu_per_item_s'])} µs/item, swarm CPU "
            f"{'/'.join(f'{x:.2f}' for x in s['swarm_cpu_share'])}; re-attach {a['reattached']}/{a['orphans']} "
            f"p95 {fmt(a['p95_s'], 2)} s = {fmt(a['p95_heartbeats'], 2)} hb, others re-attached "
            f"{len(a['others_reattached'])}; exact {r['lines_exact']} ({r['lines']} lines)")


# -- the simulations -------------------------------------------------------


def sim_costs(real: dict[str, Any] | None, defaults: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The model's costs: calibrated here when the real runs gave them, else the defaults (said so)."""
    costs = dict(defaults)
    source = {key: "default (no real run)" for key in costs}
    cal = (real or {}).get("calibration") or {}
    if "offer_s" in cal:
        costs.update(offer=cal["offer_s"], answer=cal["answer_cpu_s"], open=cal["open_s"],
                     frame=cal["frame_one_way_s"])
        for key in ("offer", "answer", "open", "frame"):
            source[key] = "calibration (idle pair in one process)"
    good = [r for r in (real or {}).get("runs", []) if "error" not in r]
    attempt = [r["root_cpu_join_net_s"] / r["join_attempts_total"] for r in good if r.get("join_attempts_total")]
    sockets = [r["root_cpu_per_signal_socket_s"] for r in good if r.get("root_cpu_per_signal_socket_s")]
    item = [r["steady"]["root_cpu_per_item_net_s"] for r in good if r["steady"].get("root_cpu_per_item_net_s")]
    if attempt:
        costs["root_attempt"] = max(0.0, statistics.median(attempt))
        source["root_attempt"] = ("real runs: root CPU in the join phase, less its idle-tree rate, ÷ join attempts "
                                  "(median)")
    if sockets:
        costs["root_socket"] = max(0.0, statistics.median(sockets))
        source["root_socket"] = "real runs: root CPU per signal socket opened and closed without an offer (median)"
    if item:
        costs["frame_cpu"] = max(0.0, statistics.median(item)) / 2
        source["frame_cpu"] = ("real runs: half the root's CPU per item in steady state, less its idle-tree rate "
                               "(median); every node pays it per frame")
    return costs, source


def simulate(p: dict[str, Any], real: dict[str, Any] | None) -> dict[str, Any]:
    costs, source = sim_costs(real, p["defaults"])
    out: dict[str, Any] = {"costs": costs, "sources": source, "runs": []}
    for scenario, net in p["nets"].items():
        for n in p["sizes"]:
            c = tree_sim.Costs(**{**costs, "net": net})
            t = time.monotonic()
            crowd = tree_sim.Crowd(n, p["degree"], c, seed=p.get("seed", 1), heartbeat=p["heartbeat_ms"] / 1000)
            join = crowd.run_join(p.get("join_limit_s", 900))
            run: dict[str, Any] = {"scenario": scenario, "net_s": net, "n": n, "degree": p["degree"], "join": join,
                                   "flows": []}
            for task in p["tasks"]:
                for batch in p.get("batches", [1]):
                    if (scenario, n) in {(s, m) for s, m in p.get("flow_skip", [])}:
                        continue
                    seconds = p["flow_seconds"][str(task)]
                    run["flows"].append(tree_sim.flow(crowd.parents(), task, batch, c, seconds,
                                                      warmup=3 * task + 1.0,
                                                      heartbeat=p["heartbeat_ms"] / 1000, flush=FLUSH_SECONDS))
            if n in p.get("balanced_sizes", []):  # the same, on the tree a level-by-level fill would make
                balanced = tree_sim.balanced(n, p["degree"])
                for task in p["tasks"]:
                    seconds = p["flow_seconds"][str(task)]
                    run["flows"].append({**tree_sim.flow(balanced, task, 1, c, seconds, warmup=3 * task + 1.0,
                                                         heartbeat=p["heartbeat_ms"] / 1000, flush=FLUSH_SECONDS),
                                         "balanced": True})
            run["reattach"] = crowd.kill(min(p["tasks"]))
            run["wall_s"] = time.monotonic() - t
            out["runs"].append(run)
            log(sim_line(run))
    # The model at the real runs' size, on loopback, beside the real figures.
    good = [r for r in (real or {}).get("runs", []) if "error" not in r]
    checks = []
    for n, task, degree in sorted({(r["n"], r["task_s"], r["degree"]) for r in good}):
        c = tree_sim.Costs(**{**costs, "net": 0.0})
        crowd = tree_sim.Crowd(n, degree, c, seed=p.get("seed", 1), heartbeat=p["heartbeat_ms"] / 1000)
        join = crowd.run_join()
        flow = tree_sim.flow(crowd.parents(), task, 1, c, 10.0, warmup=3 * task + 1.0,
                             heartbeat=p["heartbeat_ms"] / 1000, flush=FLUSH_SECONDS)
        checks.append({"n": n, "task_s": task, "degree": degree, "join": join, "flow": flow,
                       "reattach": crowd.kill(task)})
    out["checks"] = checks
    return out


def sim_line(run: dict[str, Any]) -> str:
    j, a = run["join"], run["reattach"]
    flows = ", ".join(f"T={f['task_s']} b={f['batch']}{' balanced' if f.get('balanced') else ''} "
                      f"{100 * f['efficiency_steady']:.1f}%" for f in run["flows"])
    return (f"tree sim {run['scenario']} N={run['n']}: joined 95% {fmt(j['to_95pct_s'], 1)} s, 100% "
            f"{fmt(j['to_100pct_s'], 1)} s, {j['attempts']} attempts, root links max {j['root_links_max']}, depth "
            f"{j['depth']}, max children {j['max_children']}; steady {flows}; re-attach p95 "
            f"{fmt(a['p95_heartbeats'], 2)} hb ({run['wall_s']:.0f} s to simulate)")


# -- summary ---------------------------------------------------------------


def summarize_real(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n, task, degree in sorted({(r["n"], r["task_s"], r["degree"]) for r in runs}):
        same = [r for r in runs if (r["n"], r["task_s"], r["degree"]) == (n, task, degree)]
        sel = [r for r in same if "error" not in r]
        if not sel:
            continue
        med = lambda f: summary(f(r) for r in sel)["median"]  # noqa: E731
        out[f"{n}:{task}:{degree}"] = {
            "n": n, "task_s": task, "degree": degree, "runs": len(sel), "errors": len(same) - len(sel),
            "to_95pct_s": med(lambda r: r["join"]["to_95pct_s"]),
            "to_100pct_s": med(lambda r: r["join"]["to_100pct_s"]),
            "all_joined": all(r["all_joined"] for r in sel),
            "failed_attempts": med(lambda r: r["join"]["failed_attempts"]),
            "root_links_max": max(r["root_links_max"] or 0 for r in sel),
            "max_children": max(r["shape"]["max_children"] for r in sel),
            "depth": max(r["shape"]["depth"] for r in sel),
            "efficiency": med(lambda r: r["steady"]["efficiency"]),
            "items_per_s": med(lambda r: r["steady"]["items_per_s"]),
            "root_cpu_per_item_s": med(lambda r: r["steady"]["root_cpu_per_item_s"]),
            "root_cpu_per_item_net_s": med(lambda r: r["steady"]["root_cpu_per_item_net_s"]),
            "root_idle_cpu_share": med(lambda r: r["root_idle_cpu_share"]),
            "root_cpu_join_per_attempt_s": med(lambda r: r["root_cpu_join_net_s"] / max(1, r["join_attempts_total"])),
            "root_cpu_per_signal_socket_s": med(lambda r: r["root_cpu_per_signal_socket_s"]),
            "swarm_cpu_share": med(lambda r: max(r["steady"]["swarm_cpu_share"] or [0])),
            "machine_busy_share": med(lambda r: r["steady"]["machine_busy_share"]),
            "gap_median_by_depth_s": sel[0]["gap_median_by_depth_s"],
            "reattach_p95_s": med(lambda r: r["reattach"]["p95_s"]),
            "reattach_detect_s": med(lambda r: r["reattach"]["detect_median_s"]),
            "reattach_refused": med(lambda r: r["reattach"]["refused_attempts"]),
            "reattach_p95_hb": med(lambda r: r["reattach"]["p95_heartbeats"]),
            "reattach_max_hb": max((r["reattach"]["max_heartbeats"] or 0) for r in sel),
            "orphans": med(lambda r: r["reattach"]["orphans"]),
            "victim_subtree": med(lambda r: r["reattach"]["victim_subtree"]),
            "below_orphans": med(lambda r: r["reattach"]["below_orphans"]),
            "reattached_all": all(r["reattach"]["reattached"] == r["reattach"]["orphans"] for r in sel),
            "others_reattached": sum(len(r["reattach"]["others_reattached"]) for r in sel),
            "exact": all(r["lines_exact"] and r["lines"] > 0 for r in sel),
            "spurious_drops": sum(max(0, len(r["root_dropped"]) - 1) for r in sel),
            "loadavg": [r["loadavg_at_start"][0] for r in sel],
        }
    return out


def verdicts(result: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    out: list[tuple[str, str, bool | None]] = []
    sims = (result.get("sim") or {}).get("runs", [])

    def sim(n: int, scenario: str) -> dict[str, Any] | None:
        return next((r for r in sims if r["n"] == n and r["scenario"] == scenario), None)

    for scenario in dict.fromkeys(r["scenario"] for r in sims):
        big = sim(10000, scenario)
        if big:
            t = big["join"]["to_100pct_s"]
            out.append((f"10,000 joined in < {GOALS['join_10000_s']:.0f} s [sim, {scenario}]",
                        f"95% in {fmt(big['join']['to_95pct_s'], 1)} s, 100% in {fmt(t, 1)} s",
                        t is not None and t < GOALS["join_10000_s"]))
        k = sim(1000, scenario)
        if k:
            for task, goal in ((1.0, GOALS["eff_1s"]), (0.1, GOALS["eff_100ms"])):
                f = next((f for f in k["flows"] if f["task_s"] == task and f["batch"] == 1 and not f.get("balanced")),
                         None)
                if f:
                    out.append((f"steady efficiency ≥ {100 * goal:.0f}% at {task} s items, 1,000 volunteers "
                                f"[sim, {scenario}, batch 1]", f"{100 * f['efficiency_steady']:.1f}%",
                                f["efficiency_steady"] >= goal))
        for n in (1000, 10000):
            r = sim(n, scenario)
            if r:
                a = r["reattach"]
                out.append((f"re-attach p95 ≤ {GOALS['reattach_p95_hb']:.0f} heartbeats, N={n:,} [sim, {scenario}]",
                            f"{fmt(a['p95_heartbeats'], 2)} hb ({fmt(a['p95_s'], 2)} s, heartbeat "
                            f"{a['heartbeat_s']:.0f} s, {a['orphans']} orphans, subtree {a['victim_subtree']})",
                            a["p95_heartbeats"] is not None and a["p95_heartbeats"] <= GOALS["reattach_p95_hb"]))
                out.append((f"root links ≤ {GOALS['root_links']}, N={n:,} [sim, {scenario}]",
                            f"at most {r['join']['root_links_max']}",
                            r["join"]["root_links_max"] <= GOALS["root_links"]))
    real = (result.get("real") or {}).get("summary", {})
    for key, s in real.items():
        out.append((f"root links ≤ D [real, N={s['n']}, T={s['task_s']}, D={s['degree']}]",
                    f"at most {s['root_links_max']} (most children of any node: {s['max_children']})",
                    s["root_links_max"] <= s["degree"]))
        out.append((f"re-attach p95 ≤ {GOALS['reattach_p95_hb']:.0f} heartbeats, nobody below the orphans "
                    f"reconnecting [real, N={s['n']}, T={s['task_s']}, D={s['degree']}]",
                    f"{fmt(s['reattach_p95_hb'], 2)} hb; {s['others_reattached']} other node(s) re-attached",
                    s["reattach_p95_hb"] is not None and s["reattach_p95_hb"] <= GOALS["reattach_p95_hb"]
                    and s["others_reattached"] == 0 and s["reattached_all"]))
    return out


def markdown(result: dict[str, Any]) -> str:
    text: list[str] = []
    p = result["params"]
    real = result.get("real")
    if real and "runs" in real:
        real["summary"] = summarize_real(real["runs"])
        rp = p["real"]
        cal = real.get("calibration", {})
        text += [f"**Real** — a real root (`--degree D --global-monitoring --heartbeat {rp['heartbeat_ms']}`, batch "
                 f"size {rp.get('batch', 1)}) and N real `pando.node.Node` volunteers over real data channels "
                 f"(bench/tree_swarm.py, ≤ {rp['nodes_per_process']} per process, workers emulated), "
                 f"{real['namespace']}; aiortc {real['versions'].get('aiortc')}. D − 1 victim candidates, one per "
                 f"process, start {rp['head_start_s']} s before the other N − D + 1, who come at once (join figures: "
                 f"theirs, from t0 to their module frame); items only once all joined; steady window "
                 f"{rp['steady_s']} s; then the candidate with the largest subtree gets SIGKILL. Median of "
                 f"{rp['reps']} run(s); load = the 1-minute load average at each run's start (2 cores).", ""]
        rows = []
        for s in real["summary"].values():
            gaps = ", ".join(f"{d}: {1000 * g:.0f}" for d, g in s["gap_median_by_depth_s"].items())
            net = s["root_cpu_per_item_net_s"]
            rows.append([str(s["n"]), str(s["task_s"]), str(s["degree"]), fmt(s["to_95pct_s"], 2),
                         fmt(s["to_100pct_s"], 2), fmt(s["failed_attempts"]), str(s["root_links_max"]),
                         f"{s['depth']} / {s['max_children']}", f"{100 * s['efficiency']:.1f}%",
                         f"{fmt(s['root_cpu_per_item_s'] and 1e6 * s['root_cpu_per_item_s'])} "
                         f"({fmt(net and 1e6 * net)})",
                         f"{fmt(1000 * s['root_cpu_join_per_attempt_s'], 2)} / "
                         f"{fmt(1000 * s['root_cpu_per_signal_socket_s'], 2)}",
                         f"{s['swarm_cpu_share']:.2f} / {s['machine_busy_share']:.2f}", gaps,
                         f"{fmt(s['reattach_p95_s'], 2)} s = {fmt(s['reattach_p95_hb'], 2)} "
                         f"({fmt(s['reattach_detect_s'], 1)}; {fmt(s['reattach_refused'])})",
                         f"{s['orphans']:.0f} / {s['victim_subtree']:.0f} / {s['below_orphans']:.0f} / "
                         f"{s['others_reattached']}",
                         "yes" if s["exact"] else "NO", ", ".join(f"{x:.1f}" for x in s["loadavg"])])
        text.append(table(["N", "T s", "D", "joined 95% s", "100% s", "refused attempts", "root links (max)",
                           "depth / max children", "steady efficiency", "root µs/item (net of idle)",
                           "root ms per join attempt / per signal socket", "swarm CPU (busiest process) / machine busy",
                           "refill gap ms by depth", "re-attach p95 (hb) (orphans notice s; refused)",
                           "orphans / victim subtree / below orphans / others re-attached", "exact", "load"], rows))
        if "offer_s" in cal:
            text += ["", f"Calibration (idle pair, both ends in one process; load {cal['loadavg'][0]:.1f}): offer "
                         f"{1000 * cal['offer_s']:.1f} ms, answer {1000 * cal['answer_s']:.1f} ms (CPU "
                         f"{1000 * cal['answer_cpu_s']:.1f} ms), answer → channel open {1000 * cal['open_s']:.1f} ms "
                         f"(CPU {1000 * cal['open_cpu_s']:.1f} ms), one frame one way "
                         f"{1000 * cal['frame_one_way_s']:.2f} ms (CPU {1e6 * cal['frame_cpu_s']:.0f} µs, both ends)."]
        errs = [r for r in real["runs"] if "error" in r]
        if errs:
            text += ["", "Real runs that failed: "
                     + "; ".join(f"N={r['n']} T={r['task_s']} D={r['degree']}: {r['error']}" for r in errs)]
    elif real:
        text += [f"Real runs: not run — {real.get('skipped') or real.get('error')}."]
    sim = result.get("sim")
    if sim:
        sp = p["sim"]
        costs, sources = sim["costs"], sim["sources"]
        text += ["", f"**Simulated** (bench/tree_sim.py: the product's `Overlay` and `Lender` per node on modelled "
                     f"time; degree {sp['degree']}, heartbeat {sp['heartbeat_ms'] / 1000:.0f} s, the crowd starts at "
                     f"once). Costs: " + "; ".join(
                         f"{k} {1000 * v:.2f} ms ({sources[k]})" for k, v in costs.items()
                         if isinstance(v, float)) + "; scenarios add a one-way network latency per message: "
                 + ", ".join(f"{k} {1000 * v:g} ms" for k, v in sp["nets"].items()) + ".", ""]
        rows = []
        for r in sim["runs"]:
            j, a = r["join"], r["reattach"]
            effs = "; ".join(f"{f['task_s']} s b{f['batch']}{' balanced' if f.get('balanced') else ''}: "
                             f"{100 * f['efficiency_steady']:.1f}% (root CPU {f['root_cpu_share']:.2f})"
                             for f in r["flows"])
            rows.append([r["scenario"], f"{r['n']:,}", fmt(j["to_95pct_s"], 1), fmt(j["to_100pct_s"], 1),
                         f"{j['attempts']:,}", f"{j['root_cpu_s']:.1f}", str(j["root_links_max"]),
                         f"{j['depth']} / {j['max_children']} / {j['nodes_over_degree']}", effs or "–",
                         f"{fmt(a['p95_s'], 2)} s = {fmt(a['p95_heartbeats'], 2)} ({a['orphans']} of "
                         f"{a['victim_subtree']:,})"])
        text.append(table(["scenario", "N", "joined 95% s", "100% s", "attempts", "root CPU s (join)",
                           "root links (max)", "depth / max children / nodes over D", "steady efficiency",
                           "re-attach p95 (hb)"], rows))
        if sim.get("checks"):
            text += ["", "The model at the real runs' sizes (loopback, net 0) beside them:", ""]
            rows = []
            real_sum = (real or {}).get("summary", {})
            for ch in sim["checks"]:
                rs = real_sum.get(f"{ch['n']}:{ch['task_s']}:{ch['degree']}", {})
                rows.append([str(ch["n"]), str(ch["task_s"]), str(ch["degree"]),
                             f"{fmt(ch['join']['to_100pct_s'], 2)} / {fmt(rs.get('to_100pct_s'), 2)}",
                             f"{ch['join']['root_links_max']} / {rs.get('root_links_max', '–')}",
                             f"{100 * ch['flow']['efficiency_steady']:.1f}% / "
                             f"{fmt(rs.get('efficiency') and 100 * rs['efficiency'], 1)}%",
                             f"{fmt(ch['reattach']['p95_heartbeats'], 2)} / {fmt(rs.get('reattach_p95_hb'), 2)}"])
            text.append(table(["N", "T s", "D", "joined 100% s (sim / real)", "root links (sim / real)",
                               "steady efficiency (sim / real)", "re-attach p95 hb (sim / real)"], rows))
    text += ["", "Goals:", ""]
    text += [f"- {goal}: {measured} — {'met' if met else 'NOT met'}" for goal, measured, met in verdicts(result)]
    return "\n".join(text)


if __name__ == "__main__":
    webrtc.script_main("tree", run_inside)
