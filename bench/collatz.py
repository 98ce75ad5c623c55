"""Workload 6, collatz speedup: examples/collatz.py on big-integer ranges, 1 and 2 native volunteers vs --local.

Items come from examples/collatz_ranges.py (COUNT ranges of RANGE integers
from the paper's 3179389980591125407167). ``--local`` computes in the root's
process; the volunteer runs use ``--start-idle`` and one-worker volunteers that
joined before the first item. Time: first item written → last line read.
Every configuration must print the same lines as ``--local``. Runs alternate.
"""
from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

from common import (EXAMPLES, PYTHON, LineClock, Procs, free_port, log, summary, table, fmt, wait_port,
                    wait_volunteers)

MODULE = EXAMPLES / "collatz.py"


def items(count: int, size: int) -> bytes:
    return subprocess.run([PYTHON, str(EXAMPLES / "collatz_ranges.py"), str(count), str(size)],
                          capture_output=True, check=True).stdout


def run_one(volunteers: int, data: bytes) -> dict[str, Any]:
    procs = Procs()
    try:
        if volunteers == 0:
            root = procs.pando(MODULE, "--stdin", "--local", port=0)
            vols = []
        else:
            port = free_port()
            root = procs.pando(MODULE, "--stdin", "--start-idle", port=port)
            wait_port(port)
            vols = [procs.volunteer(port, 1, f"z{i}") for i in range(volunteers)]
            wait_volunteers(vols, 1)
        clock = LineClock(root.stdout, keep=True)
        start = time.monotonic()
        threading.Thread(target=lambda: (root.stdin.write(data), root.stdin.close()), daemon=True).start()
        code = root.wait(3600)
        clock.join(10)
        return {"volunteers": volunteers, "seconds": (clock.last or time.monotonic()) - start, "exit": code,
                "output": clock.text()}
    finally:
        procs.cleanup()


def run(params: dict[str, Any]) -> dict[str, Any]:
    data = items(params["count"], params["range"])
    configs = [0, 1, 2]
    runs = []
    reference = None
    for rep in range(params["reps"]):
        order = configs[rep % 3:] + configs[:rep % 3]
        for volunteers in order:
            result = run_one(volunteers, data)
            if volunteers == 0 and reference is None:
                reference = result["output"]
            runs.append(result)
            log(f"collatz rep {rep} {'--local' if not volunteers else f'{volunteers} volunteer(s)'}: "
                f"{result['seconds']:.2f} s")
    if reference is None:
        reference = next(r["output"] for r in runs if r["volunteers"] == 0)
    for result in runs:
        result["same_as_local"] = result["output"] == reference and result["output"].count(b"\n") == params["count"]
        del result["output"]
    out: dict[str, Any] = {"params": params, "runs": runs, "summary": {}}
    local = summary(r["seconds"] for r in runs if r["volunteers"] == 0)
    for volunteers in configs:
        st = summary(r["seconds"] for r in runs if r["volunteers"] == volunteers)
        speedup = local["median"] / st["median"] if volunteers else 1.0
        out["summary"][str(volunteers)] = {
            "seconds": st, "speedup": speedup, "efficiency": speedup / volunteers if volunteers else None,
            "same_as_local": all(r["same_as_local"] for r in runs if r["volunteers"] == volunteers)}
    return out


def markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    rows = []
    for key, st in result["summary"].items():
        rows.append(["--local" if key == "0" else f"{key} volunteer(s)", fmt(st["seconds"]["median"], 2),
                     fmt(st["speedup"], 2), fmt(st["efficiency"] and 100 * st["efficiency"], 0) + ("%" if st["efficiency"] else ""),
                     "yes" if st["same_as_local"] else "NO"])
    return (f"{p['count']} ranges of {p['range']} integers from 3179389980591125407167, median of {p['reps']} "
            "alternated run(s), 2-core machine.\n\n"
            + table(["configuration", "seconds", "speedup vs --local", "efficiency", "same output as --local"], rows))
