"""Workloads 2 and 3, scaling efficiency and join: N swarm sessions on a task of T seconds.

The root runs the real module (examples/square.py for 1 s, bench/modules/
square_100ms.py for 0.1 s) with ``--stdin --start-idle``; N × ROUNDS items are
on its stdin before the sessions connect; bench/swarm.py opens the N sessions
(at most 500 per process) all at the same instant, t0.

- efficiency including the join ramp: items ÷ (last output line − t0) ÷ (N / T)
- steady-state efficiency: output rate between the moment the N-th line is
  written and the moment line (items − N) is written, ÷ (N / T)
- join: per session, t0 → its first ``lend`` frame; time until 95% and 100%
  of the sessions had one.
"""
from __future__ import annotations

import hashlib
import json
import math
import subprocess
import threading
import time
from typing import Any

from common import (BIN, EXAMPLES, KEY, listen_overflows, MODULES, PYTHON, BENCH, LineClock, Procs, free_port, log, percentile, stderr_collector,
                    summary, table, fmt, wait_port)

SESSIONS_PER_PROCESS = 500


def module_for(task: float) -> str:
    return str(EXAMPLES / "square.py") if task == 1.0 else str(MODULES / "square_100ms.py")


def run_one(n: int, task: float, rounds: int, batch: int | None = 1, profile: str | None = None,
            frame_per_result: bool = False) -> dict[str, Any]:
    """One swarm run; ``batch`` None: the root's default (--batch-size auto); ``frame_per_result``:
    sessions send each result alone (swarm.py --frame-per-result), as volunteers did before."""
    count = n * rounds
    procs = Procs()
    try:
        port = free_port()
        pinned = ("--batch-size", str(batch)) if batch is not None else ()
        root = procs.pando(module_for(task), "--stdin", "--start-idle", *pinned, port=port)
        err = stderr_collector(root)
        clock = LineClock(root.stdout, keep=True)
        data = "".join(f"{i}\n" for i in range(count)).encode()
        threading.Thread(target=lambda: (root.stdin.write(data), root.stdin.close()), daemon=True).start()
        wait_port(port)
        time.sleep(0.3)
        swarms = []
        per = math.ceil(n / math.ceil(n / SESSIONS_PER_PROCESS))
        for first in range(0, n, per):
            k = min(per, n - first)
            swarms.append(procs.popen([PYTHON, str(BENCH / "swarm.py"), f"ws://127.0.0.1:{port}/volunteer#key={KEY};",
                                       "--sessions", str(k), "--task", str(task), "--first-id", str(first),
                                       *(["--frame-per-result"] if frame_per_result else [])],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        for popen in swarms:  # each says "ready" once its imports are done
            assert popen.stderr is not None and popen.stdin is not None
            popen.stderr.readline()
        if profile:
            procs.popen([str(BIN / "py-spy"), "record", "--pid", str(root.pid), "--rate", "200", "--format", "raw",
                         "--output", profile, "--threads", "--gil"], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        overflows_before = listen_overflows()
        start_at = time.monotonic() + 0.2
        for popen in swarms:
            popen.stdin.write(f"{start_at!r}\n".encode())
            popen.stdin.flush()
        outputs: list[Any] = [None] * len(swarms)

        def collect(index: int, popen: subprocess.Popen[bytes]) -> None:
            out, errout = popen.communicate()
            try:
                outputs[index] = json.loads(out.decode().strip().splitlines()[-1])
            except (ValueError, IndexError):
                outputs[index] = {"sessions": [], "done_times": [], "error": errout.decode()[-2000:]}

        collectors = [threading.Thread(target=collect, args=(i, p), daemon=True) for i, p in enumerate(swarms)]
        for thread in collectors:
            thread.start()
        code = root.wait(60 + rounds * task * 20 + n / 10)
        exited = time.monotonic()
        clock.join(10)
        for thread in collectors:
            thread.join(60)
        end = clock.last or time.monotonic()
        overflows = listen_overflows()
        if overflows is not None and overflows_before is not None:
            overflows -= overflows_before  # machine-wide: other programs' overflows would count too
        exact = hashlib.sha1(clock.text()).hexdigest() == hashlib.sha1(
            "".join(f"{i * i}\n" for i in range(count)).encode()).hexdigest()
        sessions = [s for o in outputs if o for s in o["sessions"]]
        joins = sorted(s["first_lend"] - start_at for s in sessions if "first_lend" in s)
        ideal = n / task
        total_eff = count / (end - start_at) / ideal
        steady = None
        if rounds >= 3:
            t_a = next((t for t, c in clock.samples if c >= n), None)
            c_a = next((c for t, c in clock.samples if c >= n), None)
            t_b = next((t for t, c in clock.samples if c >= count - n), None)
            c_b = next((c for t, c in clock.samples if c >= count - n), None)
            if t_a and t_b and t_b > t_a:
                steady = (c_b - c_a) / (t_b - t_a) / ideal
        # Completions (not output lines, which wait for the oldest item) from the moment every session
        # had an item and a task's time, to a task's time before the last: the swarm at full work.
        done = sorted(t for o in outputs if o for t in o.get("done_times", []))
        computing = None
        if joins and done:
            t_a, t_b = start_at + joins[-1] + task, done[-1] - task
            if t_b > t_a:
                computing = sum(1 for t in done if t_a <= t < t_b) / (t_b - t_a) / ideal
        errors = [s.get("error") for s in sessions if s.get("error")]
        return {
            "n": n, "task_s": task, "rounds": rounds, "batch": batch, "frame_per_result": frame_per_result,
            "count": count, "exit": code, "exact": exact,
            "seconds": end - start_at, "items_per_s": count / (end - start_at), "ideal_items_per_s": ideal,
            "efficiency_total": total_eff, "efficiency_steady": steady, "efficiency_computing": computing,
            "sessions_started": len(sessions), "sessions_with_item": len(joins),
            "join_p50_s": percentile(joins, 0.5), "join_p95_s": percentile(joins, 0.95),
            "join_max_s": joins[-1] if joins else None,
            "join_95pct_of_n_s": joins[math.ceil(0.95 * n) - 1] if len(joins) >= math.ceil(0.95 * n) else None,
            "listen_overflows": overflows,
            "root_exit_after_last_line_s": exited - end,
            "connect_attempts_max": max((s["attempts"] for s in sessions), default=0),
            "session_errors": errors[:5], "session_error_count": len(errors),
            "stderr_tail": [line for line in err if "Serving" not in line][-5:],
        }
    finally:
        procs.cleanup()


def run(params: dict[str, Any]) -> dict[str, Any]:
    runs = []
    for rep in range(params["reps"]):
        for task in params["tasks"]:
            for n in params["sizes"]:
                rounds = params["rounds"].get(str(task), 5) if isinstance(params["rounds"], dict) else params["rounds"]
                result = run_one(n, task, rounds, params.get("batch", 1))
                result["rep"] = rep
                runs.append(result)
                log(f"scaling T={task} N={n}: {fmt(result['items_per_s'], 1)} items/s, efficiency "
                    f"{fmt(result['efficiency_total'], 3)} total, {fmt(result['efficiency_steady'], 3)} steady, "
                    f"join p95 {fmt(result['join_p95_s'], 2)} s, exact={result['exact']}")
    out: dict[str, Any] = {"params": params, "runs": runs, "summary": {}}
    for task in params["tasks"]:
        for n in params["sizes"]:
            sel = [r for r in runs if r["task_s"] == task and r["n"] == n]
            out["summary"][f"{task}:{n}"] = {
                "items_per_s": summary(r["items_per_s"] for r in sel),
                "efficiency_total": summary(r["efficiency_total"] for r in sel),
                "efficiency_steady": summary(r["efficiency_steady"] for r in sel if r["efficiency_steady"]),
                "join_p95_s": summary(r["join_p95_s"] for r in sel),
                "join_max_s": summary(r["join_max_s"] for r in sel),
                "all_exact": all(r["exact"] for r in sel),
            }
    return out


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for key, st in result["summary"].items():
        task, n = key.split(":")
        rows.append([task, n, fmt(st["items_per_s"]["median"], 1), fmt(float(n) / float(task), 0),
                     fmt(st["efficiency_total"]["median"] and 100 * st["efficiency_total"]["median"], 1) + "%",
                     fmt(st["efficiency_steady"]["median"] and 100 * st["efficiency_steady"]["median"], 1) + "%",
                     fmt(st["join_p95_s"]["median"], 2), fmt(st["join_max_s"]["median"], 2),
                     "yes" if st["all_exact"] else "NO"])
    p = result["params"]
    return (f"Swarm sessions (bench/swarm.py, ≤{SESSIONS_PER_PROCESS} per process), batch size {p.get('batch', 1)}, "
            f"rounds {p['rounds']}, median of {p['reps']} run(s). Original Pando: 82% at 10 tabs, 54% at 1000; "
            "target ≥ 98% at 1000.\n\n"
            + table(["task s", "N", "items/s", "ideal", "efficiency (with join)", "efficiency (steady)",
                     "join p95 s", "join max s", "exact"], rows))
