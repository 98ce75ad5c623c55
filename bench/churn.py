"""Workload 4, churn: native volunteers killed or frozen during a run; re-lend time, slowdown, exact output.

V one-worker ``pando-volunteer`` processes compute bench/modules/traced_square.py
(x * x after a short sleep; every start and end of an item is logged with the
volunteer's process group and CLOCK_MONOTONIC). The root runs with a short
``--heartbeat``. Each run without churn is paired with one with churn, in
alternating order. Events, at a fixed interval, on a random live volunteer:

- ``kill``: SIGKILL to the volunteer's whole process group (the device is gone);
  a replacement volunteer starts at once.
- ``stop``: SIGSTOP to the group (silent: the TCP connection stays open); the
  root must notice through heartbeats. SIGCONT after ``resume_after`` s: the
  volunteer finds its session dropped and rejoins; its late results are dropped.
- ``worker``: SIGKILL to the volunteer's worker process only; the volunteer
  reports the item lost and the root lends it again.

Re-lend time of an event = from the signal to the moment another worker starts
computing an item the victim was computing (for ``worker``, any worker).
"""
from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from typing import Any

from common import (MODULES, LineClock, Procs, free_port, log, percentile, stderr_collector, summary, table, fmt,
                    wait_port, wait_volunteers, worker_pids)

MODULE = MODULES / "traced_square.py"
KINDS = ("kill", "stop", "worker")


def _parse_trace(path: str) -> list[tuple[str, int, int, float]]:
    out = []
    try:
        text = open(path).read()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4:
            out.append((parts[0], int(parts[1]), int(parts[2]), float(parts[3])))
    return out


def run_one(volunteers: int, count: int, delay: float, heartbeat_ms: int, events: int, interval: float,
            resume_after: float, seed: int) -> dict[str, Any]:
    procs = Procs()
    rng = random.Random(seed)
    try:
        trace = str(procs.tmp / "trace.txt")
        env = procs.env(PANDO_BENCH_TRACE=trace, PANDO_BENCH_DELAY=str(delay))
        port = free_port()
        root = procs.pando(MODULE, "--stdin", "--start-idle", "--heartbeat", str(heartbeat_ms), port=port, env=env)
        err = stderr_collector(root)
        wait_port(port)
        vols = [procs.volunteer(port, 1, f"c{i}", env=env) for i in range(volunteers)]
        wait_volunteers(vols, 1)
        clock = LineClock(root.stdout, keep=True)
        data = "".join(f"{i}\n" for i in range(count)).encode()
        start = time.monotonic()
        threading.Thread(target=lambda: (root.stdin.write(data), root.stdin.close()), daemon=True).start()
        log_events: list[dict[str, Any]] = []
        live = list(vols)
        stopped: list[tuple[float, Any]] = []
        for index in range(events):
            deadline = start + interval * (index + 1)
            while time.monotonic() < deadline and root.poll() is None:
                for when, vol in list(stopped):
                    if time.monotonic() >= when:
                        os.killpg(vol.popen.pid, signal.SIGCONT)
                        stopped.remove((when, vol))
                        live.append(vol)
                time.sleep(0.01)
            if root.poll() is not None:
                break
            kind = KINDS[index % len(KINDS)]
            computing = {r[2] for r in _parse_trace(trace) if r[0] == "s"}  # groups that have started items
            candidates = [v for v in live if v.popen.poll() is None and worker_pids(v.popen.pid)
                          and v.popen.pid in computing]
            if not candidates:
                continue
            victim = rng.choice(candidates)
            pgid = victim.popen.pid
            event: dict[str, Any] = {"kind": kind, "pgid": pgid, "at": time.monotonic() - start,
                                     "t": time.monotonic()}
            if kind == "kill":
                os.killpg(pgid, signal.SIGKILL)
                live.remove(victim)
                live.append(procs.volunteer(port, 1, f"r{index}", env=env))
            elif kind == "stop":
                os.killpg(pgid, signal.SIGSTOP)
                live.remove(victim)
                stopped.append((time.monotonic() + resume_after, victim))
            else:
                workers = worker_pids(pgid)
                event["worker_pid"] = workers[0]
                os.kill(workers[0], signal.SIGKILL)
            log_events.append(event)
        while root.poll() is None:
            for when, vol in list(stopped):
                if time.monotonic() >= when:
                    os.killpg(vol.popen.pid, signal.SIGCONT)
                    stopped.remove((when, vol))
            time.sleep(0.02)
            if time.monotonic() - start > 300:
                break
        code = root.wait(60)
        clock.join(10)
        seconds = (clock.last or time.monotonic()) - start
        out = clock.text()
        exact = hashlib.sha1(out).hexdigest() == hashlib.sha1(
            "".join(f"{i * i}\n" for i in range(count)).encode()).hexdigest()
        time.sleep(0.2)
        records = _parse_trace(trace)
        for event in log_events:
            t_k, pgid = event["t"], event["pgid"]
            started: dict[int, float] = {}
            ended: set[int] = set()
            for kind, value, group, t in records:
                if group != pgid or t > t_k:
                    continue
                if kind == "s":
                    started[value] = t
                else:
                    ended.add(value)
            in_flight = [v for v in started if v not in ended]
            restarts = []
            for value in in_flight:
                later = [t for kind, v, group, t in records
                         if kind == "s" and v == value and t > t_k and (group != pgid or event["kind"] == "worker")]
                if later:
                    restarts.append(min(later) - t_k)
            event["in_flight"] = in_flight
            if event["kind"] == "stop":  # when the root noticed: its "dropping" line
                drops = [t - t_k for t, line in zip(err.times, err) if "dropping" in line and t > t_k]
                event["dropped_after_s"] = min(drops) if drops else None
            event["relend_s"] = max(restarts) if restarts and len(restarts) == len(in_flight) else None
            del event["t"]
        duplicates_started = len(records) and sum(1 for r in records if r[0] == "s") - count
        return {"churn": events > 0, "volunteers": volunteers, "count": count, "delay_s": delay,
                "heartbeat_ms": heartbeat_ms, "seconds": seconds, "exit": code, "exact": exact,
                "lines": clock.count, "events": log_events, "extra_starts": duplicates_started,
                "root_drops": sum(1 for line in err if "dropping" in line),
                "stderr_tail": [line for line in err if "Serving" not in line and "Monitoring" not in line][-8:]}
    finally:
        procs.cleanup()


def run(params: dict[str, Any]) -> dict[str, Any]:
    runs = []
    for rep in range(params["reps"]):
        order = [False, True] if rep % 2 == 0 else [True, False]
        for churn in order:
            result = run_one(params["volunteers"], params["count"], params["delay_s"], params["heartbeat_ms"],
                             params["events"] if churn else 0, params["interval_s"], params["resume_after_s"],
                             seed=rep)
            result["rep"] = rep
            runs.append(result)
            relends = [e["relend_s"] for e in result["events"] if e.get("relend_s") is not None]
            log(f"churn rep {rep} churn={churn}: {result['seconds']:.2f} s, exact={result['exact']}, "
                f"re-lend {['%.2f' % x for x in relends]}")
    base = summary(r["seconds"] for r in runs if not r["churn"])
    with_churn = summary(r["seconds"] for r in runs if r["churn"])
    by_kind = {}
    for kind in KINDS:
        values = [e["relend_s"] for r in runs for e in r["events"] if e["kind"] == kind and e.get("relend_s") is not None]
        drops = [e["dropped_after_s"] for r in runs for e in r["events"] if e.get("dropped_after_s") is not None]
        missing = sum(1 for r in runs for e in r["events"] if e["kind"] == kind and e.get("relend_s") is None
                      and e.get("in_flight"))
        by_kind[kind] = {"relend_s": summary(values), "p95": percentile(values, 0.95), "unmatched": missing,
                         "dropped_after_s": summary(drops) if kind == "stop" else None,
                         "events": sum(1 for r in runs for e in r["events"] if e["kind"] == kind)}
    return {"params": params, "runs": runs, "summary": {
        "seconds_without_churn": base, "seconds_with_churn": with_churn,
        "slowdown": (with_churn["median"] / base["median"]) if base["median"] and with_churn["median"] else None,
        "all_exact": all(r["exact"] for r in runs), "relend": by_kind}}


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    p = result["params"]
    rows = [[kind, str(st["events"]), fmt(st["relend_s"]["median"], 2), fmt(st["p95"], 2),
             fmt(st["relend_s"]["max"], 2), str(st["unmatched"]),
             fmt(st["dropped_after_s"]["median"], 2) if st.get("dropped_after_s") else "–"]
            for kind, st in s["relend"].items()]
    return (f"{p['volunteers']} one-worker volunteers, {p['count']} items of {p['delay_s']} s, --heartbeat "
            f"{p['heartbeat_ms']}, {p['events']} events per churn run every {p['interval_s']} s, {p['reps']} pair(s). "
            f"Run time without churn {fmt(s['seconds_without_churn']['median'], 2)} s, with churn "
            f"{fmt(s['seconds_with_churn']['median'], 2)} s: slowdown ×{fmt(s['slowdown'], 2)}. Output exact in every "
            f"run: {'yes' if s['all_exact'] else 'NO'}.\n\n"
            + table(["event", "count", "signal → re-lend median s", "p95 s", "max s", "unmatched",
                     "signal → root drops session s"], rows))
