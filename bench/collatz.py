"""Workload 6, collatz speedup: examples/collatz.py on big-integer ranges, 1 and 2 native volunteers
and the root alone vs --local.

Items come from examples/collatz_ranges.py (COUNT ranges of RANGE integers
from the paper's 3179389980591125407167). ``--local`` computes in the root's
process; the root alone (no volunteer, no ``--start-idle``) computes in its
helper, one worker per core, its start counted; the volunteer runs use
``--start-idle`` and one-worker volunteers that joined before the first item.
Time: first item written → last line read. Every configuration must print
the same lines as ``--local``. Runs alternate.

The root alone's start, on its own: ``start_reps`` trivial runs (one item of
examples/square_fast.py) alone and with ``--local``, alternated; time from
the command's start to its first result, and to its exit.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Any

from common import (EXAMPLES, PYTHON, LineClock, Procs, free_port, log, summary, table, fmt, wait_port,
                    wait_volunteers)

MODULE = EXAMPLES / "collatz.py"
#: Alternated configurations: ``--local``, the root alone, then that many volunteers.
CONFIGS = ["local", "alone", "1", "2"]
#: The root alone against ``--local`` (issue "Fast by default", on 2 cores).
ALONE_GOAL = 1.8


def items(count: int, size: int) -> bytes:
    return subprocess.run([PYTHON, str(EXAMPLES / "collatz_ranges.py"), str(count), str(size)],
                          capture_output=True, check=True).stdout


def run_one(config: str, data: bytes) -> dict[str, Any]:
    """One run of a configuration of :data:`CONFIGS`."""
    procs = Procs()
    try:
        volunteers = int(config) if config.isdigit() else 0
        if config == "local":
            root = procs.pando(MODULE, "--stdin", "--local", port=0)
        elif config == "alone":
            root = procs.pando(MODULE, "--stdin", port=0)
        else:
            port = free_port()
            root = procs.pando(MODULE, "--stdin", "--start-idle", port=port)
            wait_port(port)
            wait_volunteers([procs.volunteer(port, 1, f"z{i}") for i in range(volunteers)], 1)
        clock = LineClock(root.stdout, keep=True)
        start = time.monotonic()
        threading.Thread(target=lambda: (root.stdin.write(data), root.stdin.close()), daemon=True).start()
        code = root.wait(3600)
        clock.join(10)
        return {"config": config, "volunteers": volunteers, "seconds": (clock.last or time.monotonic()) - start,
                "exit": code, "output": clock.text()}
    finally:
        procs.cleanup()


def start_one(config: str) -> dict[str, Any]:
    """One trivial run, ``alone`` or ``local``: seconds to its first result and to its exit."""
    procs = Procs()
    try:
        began = time.monotonic()
        root = procs.pando(EXAMPLES / "square_fast.py", "5", *(["--local"] if config == "local" else []), port=0,
                           stdin=subprocess.DEVNULL)
        assert root.stdout is not None
        line = root.stdout.readline()
        first = time.monotonic() - began
        code = root.wait(60)
        return {"config": config, "first_s": first, "exit_s": time.monotonic() - began, "exit": code,
                "exact": line == b"25\n"}
    finally:
        procs.cleanup()


def start(reps: int) -> dict[str, Any]:
    """The start of a trivial run, the root alone against ``--local``, alternated."""
    runs = [start_one(config) for _ in range(reps) for config in ("alone", "local")]
    return {"runs": runs, "all_exact": all(r["exact"] and r["exit"] == 0 for r in runs),
            **{config: {"first_s": summary(r["first_s"] for r in runs if r["config"] == config),
                        "exit_s": summary(r["exit_s"] for r in runs if r["config"] == config)}
               for config in ("alone", "local")}}


def run(params: dict[str, Any]) -> dict[str, Any]:
    data = items(params["count"], params["range"])
    runs = []
    for rep in range(params["reps"]):
        for config in CONFIGS[rep % len(CONFIGS):] + CONFIGS[:rep % len(CONFIGS)]:
            result = run_one(config, data)
            runs.append(result)
            log(f"collatz rep {rep} {label(config)}: {result['seconds']:.2f} s")
    reference = next(r["output"] for r in runs if r["config"] == "local")
    for result in runs:
        result["same_as_local"] = result["output"] == reference and result["output"].count(b"\n") == params["count"]
        del result["output"]
    local = summary(r["seconds"] for r in runs if r["config"] == "local")

    def figures(config: str, workers: int) -> dict[str, Any]:
        st = summary(r["seconds"] for r in runs if r["config"] == config)
        speedup = local["median"] / st["median"]
        return {"seconds": st, "speedup": speedup, "efficiency": speedup / workers if config != "local" else None,
                "same_as_local": all(r["same_as_local"] for r in runs if r["config"] == config)}

    # Keyed by volunteers ("0": --local), as bench/paper.py reads them; the root alone apart.
    return {"params": params, "runs": runs,
            "summary": {str(int(c) if c.isdigit() else 0): figures(c, int(c) if c.isdigit() else 1)
                        for c in CONFIGS if c != "alone"},
            "alone": {**figures("alone", os.cpu_count() or 1), "workers": os.cpu_count() or 1},
            "start": start(params["start_reps"]) if params.get("start_reps") else None}


def label(config: str) -> str:
    return {"local": "--local", "alone": "root alone"}.get(config, f"{config} volunteer(s)")


def markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    alone, start_ = result["alone"], result["start"]
    rows = []
    for name, st in [*((label("local") if key == "0" else label(key), st) for key, st in result["summary"].items()),
                     (f"root alone ({alone['workers']} workers)", alone)]:
        rows.append([name, fmt(st["seconds"]["median"], 2), fmt(st["speedup"], 2),
                     fmt(st["efficiency"] and 100 * st["efficiency"], 0) + ("%" if st["efficiency"] else ""),
                     "yes" if st["same_as_local"] else "NO"])
    met = "met" if alone["speedup"] >= ALONE_GOAL else "NOT met"
    text = (f"{p['count']} ranges of {p['range']} integers from 3179389980591125407167, median of {p['reps']} "
            "alternated run(s), 2-core machine.\n\n"
            + table(["configuration", "seconds", "speedup vs --local", "efficiency", "same output as --local"], rows)
            + f"\n\nThe root alone ÷ --local: {alone['speedup']:.2f} (goal ≥ {ALONE_GOAL} on 2 cores): {met}.")
    if start_ is not None:
        seconds = {config: (fmt(start_[config]["first_s"]["median"], 3), fmt(start_[config]["exit_s"]["median"], 3))
                   for config in ("alone", "local")}
        text += (f"\n\nStart of a trivial run (one item, median of {p['start_reps']}): the root alone's first result "
                 f"after {seconds['alone'][0]} s, its exit after {seconds['alone'][1]} s; --local "
                 f"{seconds['local'][0]} s and {seconds['local'][1]} s.")
    return text
