"""Workload 10, WebRTC data channels: join time through pando-server, and throughput against WebSocket.

    python bench/webrtc.py quick|full        (this workload alone, through run.py)

aioice (aiortc's ICE) never offers 127.0.0.1 as a candidate, so on plain
loopback a data channel finds no path. The workload therefore runs in a
private network namespace of its own (``unshare -n``: a loopback with
127.0.0.1 and a second address, 127.0.0.2) and binds everything to
127.0.0.2: when it is not already inside one, it starts itself again under
``unshare`` (``--inside``) and reads back its results. No ICE servers (no
STUN, no TURN): host candidates only, as on one LAN. Ports 19600-19699.

1. **Join** — a ``pando-server`` and one root (``pando examples/square_fast.py
   --stdin --start-idle --host 127.0.0.2:PORT --secret S --degree 1000``, batch size 1,
   thousands of items waiting on its stdin). bench/rtc_swarm.py (one process,
   one :class:`pando.rtc.RtcLoop`, a thread per joiner calling
   ``pando.joiner.join``, then hello → module → lend over the channel through
   ``pando.protocol``) joins through the server: first ``sequential`` joins,
   one after another (the first of a run is reported apart: the root loads
   aiortc on its first offer), then crowds of joiners that all call ``join`` at
   the same instant. Join time = the joiner opens the signal socket → its first
   ``lend`` frame (also recorded: → channel open, → module). The joiners
   compute what they are lent (``x * x`` after a sleep) and stay until every one
   of their process has joined; the root's output so far is checked line by line.
2. **Throughput** — ``examples/square_fast.py`` through ``pando --stdin
   --start-idle --batch-size B`` with 4 one-worker ``pando-volunteer`` processes,
   over data channels (``--protocol webrtc`` through a fresh ``pando-server``)
   and over WebSocket (``--protocol websocket``, straight to the root), in the
   same run, order alternated, repeated. As in bench/overhead.py: volunteers
   joined and workers up before the first item is written; time = first item
   written → last line read; output checked byte for byte; root CPU from wait4.
3. Optionally, py-spy (``--gil --threads``) on the root during one more data
   channel run: where the root's CPU goes (not counted in the medians).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from common import (BENCH, BIN, EXAMPLES, KEY, PYTHON, RESULTS, LineClock, Procs, Volunteer, cpu_seconds, fmt, log,
                    percentile, ratio, stderr_collector, summary, table, wait_rusage, wait_volunteers)
from overhead import _feed, items_bytes, stream

MODULE = EXAMPLES / "square_fast.py"
ADDR = "127.0.0.2"
PORTS = (19600, 19699)
SECRET = "bench-pando-server-secret-0123456789"
SERVER = str(BIN / "pando-server")
VOLUNTEER = str(BIN / "pando-volunteer")
NETNS_ENV = "PANDO_BENCH_NETNS"
# Run by `sh -c` inside the new namespace: bring its loopback up with the second address, then the command.
NETNS_SCRIPT = 'ip link set lo up && ip addr add 127.0.0.2/8 dev lo && exec "$@"'
NAMESPACE_NOTE = ("in a private network namespace (`unshare -n`; loopback with 127.0.0.1 and 127.0.0.2, "
                  "everything bound to 127.0.0.2, because aioice never uses 127.0.0.1 as a candidate); "
                  "no ICE servers: host candidates only")

GOALS = {"join_p95_s": 0.8, "crowd_all_s": 10.0, "dc_ws_at_64": 0.40}


# -- the namespace ---------------------------------------------------------


def in_namespace() -> bool:
    """Whether this process runs where aioice can find 127.0.0.2 (the namespace this workload makes)."""
    if os.environ.get(NETNS_ENV) != "1":
        return False
    try:
        import ifaddr  # aioice's own way of listing addresses
    except ImportError:
        return False
    return any(ip.ip == ADDR for adapter in ifaddr.get_adapters() for ip in adapter.ips)


def run(params: dict[str, Any]) -> dict[str, Any]:
    """The workload; outside the namespace, under ``unshare -n`` in a child process."""
    if in_namespace():
        return run_inside(params)
    result = namespaced("webrtc", BENCH / "webrtc.py", params, params.get("timeout_s", 1200))
    return result if "skipped" not in result and "error" not in result else {"params": params, **result}


def namespaced(name: str, script: Path, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``script --inside PARAMS OUT`` run again in a private network namespace (127.0.0.2 on lo): its
    results, or ``{"skipped": why}`` / ``{"error": why}``."""
    for tool in ("unshare", "ip"):
        if not any((Path(d) / tool).exists() for d in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/sbin"]):
            log(f"{name}: SKIPPED — `{tool}` is missing")
            return {"skipped": f"`{tool}` is missing"}
    procs = Procs()
    out_path = procs.tmp / f"{name}.json"
    env = procs.env(**{NETNS_ENV: "1"})
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    log(f"{name}: starting again inside a private network namespace (unshare -n, 127.0.0.2 on lo)")
    child = procs.popen(["unshare", "-n", "sh", "-c", NETNS_SCRIPT, "sh", PYTHON, str(script),
                         "--inside", json.dumps(params), str(out_path)], env=env, stdin=subprocess.DEVNULL)
    try:
        code = child.wait(timeout)
    except BaseException:
        # SIGTERM first: the child kills its own processes (each in a session of its own) on the way out.
        try:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        raise
    finally:
        try:
            result = json.loads(out_path.read_text()) if out_path.exists() else None
        except ValueError:
            result = None
        procs.cleanup()
    if result is None:
        log(f"{name}: FAILED — the namespaced run exited with {code} and no results "
            "(unshare needs root or user namespaces)")
        return {"error": f"the run under unshare exited with {code} and wrote no results"}
    return result


# -- processes and ports ---------------------------------------------------

class PortRange:
    """Ports handed out in turn from ``first``..``last``, each free on ``address`` when given (the namespace
    is ours: only our own runs may hold one)."""

    def __init__(self, first: int, last: int, address: str) -> None:
        self._first, self._last, self._address = first, last, address
        self._next = first

    def free(self) -> int:
        for _ in range(self._last - self._first + 1):
            port = self._next
            self._next = port + 1 if port < self._last else self._first
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self._address, port))
                except OSError:
                    continue
            return port
        raise RuntimeError(f"no free port in {self._first}-{self._last}")


free_port = PortRange(*PORTS, ADDR).free


def wait_port(port: int, timeout: float = 20, popen: subprocess.Popen[bytes] | None = None,
              err: list[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.settimeout(0.2)
            if probe.connect_ex((ADDR, port)) == 0:
                return
        if popen is not None and popen.poll() is not None:
            raise RuntimeError(f"exited with {popen.returncode} before listening: {''.join((err or [])[-5:])}")
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {ADDR}:{port}")


def start_server(procs: Procs) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    server = procs.popen([SERVER, "--port", str(port), "--bind", ADDR, "--secret", SECRET],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = stderr_collector(server)
    wait_port(port, popen=server, err=err)
    return port, server


#: --degree for a root that takes every joiner as its own child (the largest the option allows).
FLAT_DEGREE = 1000


def start_root(procs: Procs, batch: int, server_port: int | None) -> tuple[int, subprocess.Popen[bytes], list[str]]:
    """A root on 127.0.0.2, joined to the pando-server at ``server_port`` if given; listening when this returns."""
    port = free_port()
    host = ["--host", f"{ADDR}:{server_port}", "--secret", SECRET] if server_port else []
    # A flat root: this workload measures joins into one root. Under the default --degree (10) the
    # joiners past the tenth, which cannot take children, would wait for room until their joins
    # expire; the tree is workload 11's.
    root = procs.pando(MODULE, "--stdin", "--start-idle", "--bind", ADDR, "--batch-size", str(batch), *host,
                       "--degree", str(FLAT_DEGREE), port=port)
    err = stderr_collector(root)
    wait_port(port, popen=root, err=err)  # with --host, the root joined the server before it listens
    return port, root, err


def start_volunteer(procs: Procs, url: str, transport: str, name: str) -> Volunteer:
    popen = procs.popen([VOLUNTEER, url, "--workers", "1", "--name", name, "--protocol", transport],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return Volunteer(popen)


# -- 1. join ---------------------------------------------------------------


def run_swarm(procs: Procs, server_port: int, mode: str, sessions: int, task: float,
              timeout: float) -> dict[str, Any]:
    """bench/rtc_swarm.py through the server; its JSON, with its CPU seconds from wait4."""
    popen = procs.popen([PYTHON, str(BENCH / "rtc_swarm.py"), f"ws://{ADDR}:{server_port}/rendezvous/signal", KEY,
                         "--sessions", str(sessions), "--mode", mode, "--task", str(task), "--timeout", str(timeout)],
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, errout = popen.communicate(timeout=timeout + 60)
    try:
        result = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"mode": mode, "error": f"exit {popen.returncode}: {errout.decode()[-2000:]}", "records": []}
    result["stderr_tail"] = errout.decode().splitlines()[-5:]
    return result


def join_times(records: list[dict[str, Any]], since: float | None = None) -> dict[str, list[float]]:
    """Per joiner: start (or ``since``) → channel open, → module, → first lend."""
    out: dict[str, list[float]] = {"open": [], "module": [], "first_lend": []}
    for r in records:
        t0 = since if since is not None else r["start"]
        for key in out:
            if key in r:
                out[key].append(r[key] - t0)
    return out


def check_prefix(lines: bytes) -> tuple[int, bool]:
    """How many output lines, and whether line i is i * i for each of them (the order too)."""
    got = lines.decode().splitlines()
    return len(got), all(line == str(i * i) for i, line in enumerate(got))


def run_join_round(params: dict[str, Any], rnd: int) -> dict[str, Any]:
    procs = Procs()
    try:
        server_port, server = start_server(procs)
        port, root, err = start_root(procs, 1, server_port)
        clock = LineClock(root.stdout, keep=True)
        # Plenty of items, and stdin left open: the run never runs out of work while joiners come.
        threading.Thread(target=_feed, args=(root.stdin, items_bytes(params["items"]), False), daemon=True).start()
        time.sleep(0.3)
        out: dict[str, Any] = {"round": rnd}
        cpu0 = cpu_seconds(root.pid)
        out["sequential"] = run_swarm(procs, server_port, "sequential", params["sequential"] + 1, params["task_s"],
                                      params["timeout_s"])
        out["root_cpu_sequential_s"] = cpu_seconds(root.pid) - cpu0
        seq = out["sequential"]["records"]  # the first join of the run, then the measured ones
        out["cold"] = join_times(seq[:1])
        out["warm"] = join_times(seq[1:])
        out["sequential_errors"] = [r["error"] for r in seq if "error" in r]
        log(f"webrtc join round {rnd}: first join of the run {fmt(_first(out['cold']['first_lend']), 3)} s; "
            f"next {len(out['warm']['first_lend'])}: p50 {fmt(percentile(out['warm']['first_lend'], 0.5), 3)} s, "
            f"p95 {fmt(percentile(out['warm']['first_lend'], 0.95), 3)} s"
            + (f"; errors {out['sequential_errors'][:2]}" if out["sequential_errors"] else ""))
        out["crowds"] = []
        for c in range(params["crowds"]):
            time.sleep(1.0)  # the previous joiners' channels are closed and their sessions gone
            cpu0 = cpu_seconds(root.pid)
            crowd = run_swarm(procs, server_port, "crowd", params["crowd"], params["task_s"], params["timeout_s"])
            crowd["root_cpu_s"] = cpu_seconds(root.pid) - cpu0
            records = crowd["records"]
            times = join_times(records, crowd.get("t0"))
            lend = times["first_lend"]
            crowd["times"] = times
            crowd["joined"] = len(lend)
            crowd["all_joined_s"] = max(lend) if len(lend) == params["crowd"] else None
            crowd["errors"] = [r["error"] for r in records if "error" in r]
            crowd["start_spread_s"] = (max(r["start"] for r in records) - min(r["start"] for r in records)
                                       if records else None)
            del crowd["records"]
            out["crowds"].append(crowd)
            log(f"webrtc crowd {rnd}.{c}: {crowd['joined']}/{params['crowd']} joined, p50 "
                f"{fmt(percentile(lend, 0.5), 2)} s, p95 {fmt(percentile(lend, 0.95), 2)} s, all "
                f"{fmt(crowd['all_joined_s'], 2)} s; driver CPU {fmt(crowd.get('cpu_joins_s'), 2)} s, root CPU "
                f"{crowd['root_cpu_s']:.2f} s" + (f"; errors {crowd['errors'][:2]}" if crowd["errors"] else ""))
        # Stop the root, then check what it wrote: every line so far must be its item's square, in order.
        root.send_signal(signal.SIGTERM)
        wait_rusage(root, 15)
        clock.join(5)
        out["lines"], out["lines_exact"] = check_prefix(clock.text())
        out["root_log"] = [line for line in err if "Serving" not in line and "Monitoring" not in line][-8:]
        server.send_signal(signal.SIGTERM)
        return out
    finally:
        procs.cleanup()


def _first(values: list[float]) -> float | None:
    return values[0] if values else None


# -- 2. throughput ---------------------------------------------------------


def run_throughput(transport: str, batch: int, count: int, volunteers: int, *, profile: str | None = None,
                   timeout: float = 300) -> dict[str, Any]:
    """One run: ``dc`` (volunteers over data channels through a pando-server) or ``ws`` (WebSocket to the root)."""
    procs = Procs()
    try:
        server_port = None
        if transport == "dc":
            server_port, _ = start_server(procs)
        port, root, err = start_root(procs, batch, server_port)
        url = f"http://{ADDR}:{server_port or port}/#key={KEY};"
        vols = [start_volunteer(procs, url, "webrtc" if transport == "dc" else "websocket", f"{transport}{i}")
                for i in range(volunteers)]
        joined_at = time.monotonic()
        wait_volunteers(vols, 1, settle=0.3 + 0.05 * volunteers)
        join_wall = max(v.joined_at or joined_at for v in vols) - joined_at
        run = stream(root, vols, count, profile=profile, profile_rate=500, timeout=timeout)
        return {"transport": transport, "batch": batch, "volunteers": volunteers, **run,
                "volunteers_join_s": join_wall,
                # asyncio's complaint at the root's exit about aiortc tasks left on the stopped loop
                "pending_task_warnings": sum("Task was destroyed but it is pending" in line for line in list(err)),
                "stderr_tail": [line for line in err if "Serving" not in line and "Monitoring" not in line
                                and "plain HTTP" not in line][-5:]}
    finally:
        procs.cleanup()


# -- 3. profile ------------------------------------------------------------


def _package(frame: str) -> str:
    """Where a frame's code lives, coarsely: the library or pando module."""
    file = frame.rpartition("(")[2]
    for needle, label in (("aiortc/rtcsctptransport", "aiortc SCTP (pure Python)"),
                          ("aiortc/rtcdtlstransport", "aiortc DTLS"), ("aiortc/", "aiortc (other)"),
                          ("aioice/", "aioice (ICE, UDP)"), ("pylibsrtp", "aiortc DTLS"),
                          ("OpenSSL/", "OpenSSL bindings"), ("cryptography/", "OpenSSL bindings"),
                          ("crc32c", "SCTP checksum"), ("asyncio/", "asyncio event loop"),
                          ("pando/rtc.py", "pando.rtc (ChannelLink)"),
                          ("json/", "JSON encode/decode"), ("websockets/", "websockets"),
                          ("threading.py", "locks, conditions, queues"), ("queue.py", "locks, conditions, queues")):
        if needle in file:
            return label
    if "pando/" in file:
        return "pando." + file.rpartition("pando/")[2].partition(".py")[0]
    return "other (interpreter, stdlib)"


def analyse_profile(path: Path, top: int = 12) -> dict[str, Any]:
    import profile_root

    stacks = profile_root.parse(path)
    total = sum(count for _, frames, count in stacks if frames) or 1
    threads: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    selfs: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for thread, frames, count in stacks:
        if not frames:
            continue
        name = thread or "?"
        threads["pando-webrtc (the aiortc loop: SCTP, DTLS, ICE, channel callbacks)" if name == "pando-webrtc"
                else profile_root.role(name)] += count
        leaf[_package(frames[-1])] += count
        selfs[profile_root.short(frames[-1])] += count
        seen = set()
        for frame in frames:
            short = profile_root.short(frame)
            if any(s in frame for s in ("aiortc/", "pando/", "aioice/")) and short not in seen:
                seen.add(short)
                incl[short] += count

    def pct(counter: Counter[str], n: int = top) -> list[tuple[str, float]]:
        return [(k, 100 * v / total) for k, v in counter.most_common(n)]

    return {"file": str(path), "samples": total, "by_thread": pct(threads), "by_package": pct(leaf),
            "self": pct(selfs), "inclusive": pct(incl, 16)}


# -- the workload ----------------------------------------------------------


def alternated(batches: list[int], reps: int) -> list[tuple[int, int, str]]:
    """(rep, batch, transport) in run order: batch order rotates, transports swap every other time."""
    order = []
    for rep in range(reps):
        shift = rep % len(batches)
        for i, batch in enumerate(batches[shift:] + batches[:shift]):
            pair = ("dc", "ws") if (rep + i) % 2 == 0 else ("ws", "dc")
            order += [(rep, batch, transport) for transport in pair]
    return order


def run_inside(params: dict[str, Any]) -> dict[str, Any]:
    log("webrtc: running " + NAMESPACE_NOTE)
    out: dict[str, Any] = {"params": params, "namespace": NAMESPACE_NOTE, "versions": _versions()}
    j = params["join"]
    out["join"] = {"rounds": [run_join_round(j, rnd) for rnd in range(j["rounds"])]}
    out["join"]["summary"] = summarize_join(out["join"]["rounds"], j)
    t = params["throughput"]
    runs = []
    for rep, batch, transport in alternated(t["batches"], t["reps"]):
        count = t["counts"][str(batch)]
        try:
            r = run_throughput(transport, batch, count, t["volunteers"], timeout=t["run_timeout_s"])
        except Exception as exc:  # noqa: BLE001 - one broken run is reported, the rest goes on
            r = {"transport": transport, "batch": batch, "count": count, "error": f"{type(exc).__name__}: {exc}"}
        r["rep"] = rep
        runs.append(r)
        log(f"webrtc rep {rep} b={batch} {transport}: {fmt(r.get('items_per_s'))} items/s, exact={r.get('exact')}"
            + (f", root CPU {1e6 * (r['root_cpu_s'] - r['root_cpu_before_s']) / count:.1f} µs/item"
               if r.get("root_cpu_s") else "")
            + (f", ERROR {r['error']}" if "error" in r else ""))
    out["throughput"] = {"runs": runs, "summary": summarize_throughput(runs, t)}
    p = params.get("profile")
    if p:
        path = RESULTS / "profiles" / f"root-webrtc-dc-{t['volunteers']}x{p['batch']}.pyspy.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"webrtc: profiling the root, data channels, batch {p['batch']}")
        try:
            prun = run_throughput("dc", p["batch"], p["count"], t["volunteers"], profile=str(path),
                                  timeout=t["run_timeout_s"])
            out["profile"] = {"run": prun, "analysis": analyse_profile(path)}
        except Exception as exc:  # noqa: BLE001
            out["profile"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _versions() -> dict[str, Any]:
    from importlib.metadata import version

    out = {}
    for package in ("aiortc", "aioice", "pyopenssl", "cryptography", "av"):
        try:
            out[package] = version(package)
        except Exception:  # noqa: BLE001
            out[package] = None
    return out


def summarize_join(rounds: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    cold = [t for r in rounds for t in r["cold"]["first_lend"]]
    warm = [t for r in rounds for t in r["warm"]["first_lend"]]
    warm_open = [t for r in rounds for t in r["warm"]["open"]]
    crowds = [c for r in rounds for c in r["crowds"]]
    every = [t for c in crowds for t in c["times"]["first_lend"]]
    alls = [c["all_joined_s"] for c in crowds]

    def stats(data: list[float]) -> dict[str, Any]:
        return {"n": len(data), "p50": percentile(data, 0.5), "p95": percentile(data, 0.95),
                "max": max(data) if data else None}

    return {
        "cold_first_lend_s": cold, "warm_first_lend": stats(warm), "warm_open": stats(warm_open),
        "crowd_first_lend": stats(every),
        "crowd_p50_s": summary(percentile(c["times"]["first_lend"], 0.5) for c in crowds),
        "crowd_p95_s": summary(percentile(c["times"]["first_lend"], 0.95) for c in crowds),
        "crowd_max_s": summary(max(c["times"]["first_lend"], default=None) for c in crowds),
        "crowd_all_joined_s": summary(alls),
        "crowd_every_joiner": all(a is not None for a in alls) and bool(alls),
        "crowd_driver_cpu_s": summary(c.get("cpu_joins_s") for c in crowds),
        "crowd_root_cpu_s": summary(c.get("root_cpu_s") for c in crowds),
        "errors": sum(len(r["sequential_errors"]) + sum(len(c["errors"]) for c in r["crowds"]) for r in rounds),
        "output_exact": all(r["lines_exact"] for r in rounds),
        "lines": [r["lines"] for r in rounds],
    }


def summarize_throughput(runs: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for batch in params["batches"]:
        row: dict[str, Any] = {"count": params["counts"][str(batch)]}
        for transport in ("dc", "ws"):
            sel = [r for r in runs if r["batch"] == batch and r["transport"] == transport]
            good = [r for r in sel if r.get("exact")]
            st = summary(r["items_per_s"] for r in good)
            st["all_exact"] = bool(sel) and len(good) == len(sel)
            st["root_cpu_per_item_s"] = summary((r["root_cpu_s"] - r["root_cpu_before_s"]) / r["count"] for r in good
                                                if r.get("root_cpu_s") is not None)["median"]
            st["volunteers_cpu_per_item_s"] = summary(r["volunteers_cpu_s"] / r["count"] for r in good
                                                      if r.get("volunteers_cpu_s") is not None)["median"]
            st["machine_busy_share"] = summary(r["machine_busy_share"] for r in good)["median"]
            st["root_exit_after_last_line_s"] = summary(r["root_exit_after_last_line_s"] for r in good)["median"]
            st["runs_with_pending_task_warnings"] = sum(1 for r in sel if r.get("pending_task_warnings"))
            st["runs"] = len(sel)
            row[transport] = st
        row["dc/ws"] = ratio(row["dc"]["median"], row["ws"]["median"])
        # Per repetition: the two runs of a pair ran back to back.
        pairs = {r["rep"]: r for r in runs if r["batch"] == batch and r["transport"] == "ws" and r.get("exact")}
        row["dc/ws_per_rep"] = [r["items_per_s"] / pairs[r["rep"]]["items_per_s"] for r in runs
                                if r["batch"] == batch and r["transport"] == "dc" and r.get("exact")
                                and r["rep"] in pairs]
        out[str(batch)] = row
    return out


def verdicts(result: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) for the three goals."""
    out: list[tuple[str, str, bool | None]] = []
    js = result.get("join", {}).get("summary")
    if js:
        p95 = js["warm_first_lend"]["p95"]
        cold = max(js["cold_first_lend_s"], default=None)
        met = p95 is not None and p95 <= GOALS["join_p95_s"]
        out.append((f"one join ≤ {GOALS['join_p95_s']} s p95",
                    f"p95 {fmt(p95, 3)} s over {js['warm_first_lend']['n']} sequential joins "
                    f"(first join of a run, root loading aiortc: {fmt(cold, 3)} s)", met))
        all_s = js["crowd_all_joined_s"]
        met = js["crowd_every_joiner"] and all_s["max"] is not None and all_s["max"] <= GOALS["crowd_all_s"]
        out.append((f"30 joiners all in ≤ {GOALS['crowd_all_s']:.0f} s",
                    f"all joined in {fmt(all_s['median'], 2)} s (median of {all_s['n']} crowd(s), worst "
                    f"{fmt(all_s['max'], 2)} s)" if all_s["n"] else "no crowd completed", met))
    ts = result.get("throughput", {}).get("summary", {}).get("64")
    if ts:
        r = ts["dc/ws"]
        met = r is not None and r >= GOALS["dc_ws_at_64"] and ts["dc"]["all_exact"] and ts["ws"]["all_exact"]
        out.append((f"data channels ≥ {100 * GOALS['dc_ws_at_64']:.0f}% of WebSocket at batch 64",
                    f"{fmt(None if r is None else 100 * r, 0)}% ({fmt(ts['dc']['median'])} ÷ "
                    f"{fmt(ts['ws']['median'])} items/s)", met))
    return out


def markdown(result: dict[str, Any]) -> str:
    if "skipped" in result or "error" in result:
        return f"Not run: {result.get('skipped') or result.get('error')}."
    p = result["params"]
    v = result["versions"]
    text = [f"Ran {result['namespace']}. aiortc {v.get('aiortc')}, aioice {v.get('aioice')}."]
    js = result["join"]["summary"]
    jp = p["join"]
    text += ["", f"**Join through pando-server** (t = the joiner opens the signal socket → its first `lend`; "
                 f"batch size 1; {jp['rounds']} run(s) of root + server; joiners from one process, "
                 f"bench/rtc_swarm.py).", ""]
    rows = []
    for r in result["join"]["rounds"]:
        w = r["warm"]
        rows.append([f"sequential, run {r['round']}", str(len(w["first_lend"])),
                     fmt(percentile(w["open"], 0.5), 3), fmt(percentile(w["first_lend"], 0.5), 3),
                     fmt(percentile(w["first_lend"], 0.95), 3), fmt(max(w["first_lend"], default=None), 3), "–"])
        for c in r["crowds"]:
            t = c["times"]
            rows.append([f"{p['join']['crowd']} at once, run {r['round']}", f"{c['joined']}",
                         fmt(percentile(t["open"], 0.5), 2), fmt(percentile(t["first_lend"], 0.5), 2),
                         fmt(percentile(t["first_lend"], 0.95), 2), fmt(max(t["first_lend"], default=None), 2),
                         fmt(c["all_joined_s"], 2)])
    text.append(table(["joins", "joined", "→ channel open p50 s", "→ first lend p50 s", "p95 s", "max s",
                       "all joined s"], rows))
    text += ["", f"First join of a run (the root imports aiortc on its first offer): "
                 f"{', '.join(fmt(x, 3) + ' s' for x in js['cold_first_lend_s'])}. Crowd: joiners' process CPU "
                 f"{fmt(js['crowd_driver_cpu_s']['median'], 2)} s and root CPU "
                 f"{fmt(js['crowd_root_cpu_s']['median'], 2)} s per crowd (medians). Join errors: {js['errors']}; "
                 f"the roots' output lines ({', '.join(f'{n:,}' for n in js['lines'])}) all correct and in order: "
                 f"{'yes' if js['output_exact'] else 'NO'}."]
    tp = p["throughput"]
    ts = result["throughput"]["summary"]
    text += ["", f"**Throughput**: `examples/square_fast.py`, {tp['volunteers']} one-worker `pando-volunteer`s, "
                 f"data channels through pando-server (DC) against WebSocket straight to the root (WS); items/s, "
                 f"median of {tp['reps']} alternated run(s); first item written → last line read.", ""]
    rows = []
    for batch in tp["batches"]:
        s = ts[str(batch)]
        cpu = lambda x: "–" if x is None else f"{1e6 * x:.1f}"  # noqa: E731
        per_rep = s["dc/ws_per_rep"]
        rows.append([str(batch), f"{s['count']:,}",
                     fmt(s["dc"]["median"]) + ("" if s["dc"]["all_exact"] else " (NOT EXACT)"),
                     fmt(s["ws"]["median"]) + ("" if s["ws"]["all_exact"] else " (NOT EXACT)"),
                     fmt(s["dc/ws"], 2) + (f" ({min(per_rep):.2f}–{max(per_rep):.2f})" if per_rep else ""),
                     cpu(s["dc"]["root_cpu_per_item_s"]), cpu(s["ws"]["root_cpu_per_item_s"]),
                     cpu(s["dc"]["volunteers_cpu_per_item_s"]), cpu(s["ws"]["volunteers_cpu_per_item_s"])])
    text.append(table(["batch", "items", "DC items/s", "WS items/s", "DC ÷ WS (per pair)", "root CPU µs/item DC",
                       "WS", "volunteers' CPU µs/item DC", "WS"], rows))
    dc_exit = summary(ts[str(b)]["dc"]["root_exit_after_last_line_s"] for b in tp["batches"])["median"]
    ws_exit = summary(ts[str(b)]["ws"]["root_exit_after_last_line_s"] for b in tp["batches"])["median"]
    warned = sum(ts[str(b)]["dc"]["runs_with_pending_task_warnings"] for b in tp["batches"])
    text += ["", f"Root exit after its last line (median): DC {fmt(dc_exit, 2)} s, WS {fmt(ws_exit, 2)} s. DC runs whose "
                 f"root printed asyncio's `Task was destroyed but it is pending!` (aiortc tasks left on the stopped "
                 f"loop) as it exited: {warned} of {sum(ts[str(b)]['dc']['runs'] for b in tp['batches'])}."]
    text += ["", "Goals:", ""]
    text += [f"- {goal}: {measured} — {'met' if met else 'NOT met'}" for goal, measured, met in verdicts(result)]
    prof = result.get("profile")
    if prof and "analysis" in prof:
        a, r = prof["analysis"], prof["run"]
        text += ["", f"Root profile, DC, batch {p['profile']['batch']} (py-spy --gil, {a['samples']} samples; "
                     f"{fmt(r.get('items_per_s'))} items/s under the profiler, exact: {r.get('exact')}):", ""]
        text.append(table(["thread", "% of samples"], [[k, f"{x:.1f}%"] for k, x in a["by_thread"][:8]]))
        text.append("")
        text.append(table(["code (innermost frame)", "% of samples"], [[k, f"{x:.1f}%"] for k, x in a["by_package"]]))
        text.append("")
        text.append(table(["function (inclusive)", "% of samples"], [[k, f"{x:.1f}%"] for k, x in a["inclusive"]]))
    elif prof:
        text += ["", f"Root profile: FAILED — {prof.get('error')}"]
    return "\n".join(text)


def script_main(name: str, run_inside: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """A namespaced workload's script: ``--inside PARAMS OUT`` (see :func:`namespaced`) runs it here,
    anything else runs the ``name`` workload through run.py (``quick`` unless a size is given)."""
    if len(sys.argv) >= 4 and sys.argv[1] == "--inside":
        params, out_path = json.loads(sys.argv[2]), Path(sys.argv[3])
        if not in_namespace():
            sys.exit(f"{name}.py --inside: not in the namespace this workload makes (127.0.0.2 on lo)")
        # SIGTERM from the parent: leave through the finally blocks, which kill what this run started.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
        out_path.write_text(json.dumps(run_inside(params), default=str))
        return
    import run as runner

    size = sys.argv[1] if len(sys.argv) > 1 else "quick"
    sys.argv = [sys.argv[0], size, "--only", name]
    runner.main()


if __name__ == "__main__":
    script_main("webrtc", run_inside)
