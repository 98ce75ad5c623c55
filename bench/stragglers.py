"""Workload 8, stragglers and --verify: what one slow or frozen volunteer costs, and what a second opinion costs.

V healthy one-worker ``pando-volunteer`` processes compute
bench/modules/straggler_square.py (x * x after sleeping ``delay`` seconds) on
``count`` items, with a short ``--heartbeat`` so the straggler floor (one
heartbeat) is short too. Scenarios, at each batch size, alternated within each
repetition:

- ``healthy``: the V healthy volunteers alone: the baseline;
- ``slow``: the same plus one volunteer ``slow_factor`` times slower;
- ``frozen``: the same plus one volunteer whose worker hangs (sleeps an hour) on
  its ``freeze_at``-th item while the volunteer keeps heartbeating: only a
  straggler copy on another volunteer gets that item done;
- ``verify``: the V healthy volunteers with ``--verify 2`` (each item computed twice).

Time = first item written → last line read, volunteers joined and their workers
up before. Each run is compared with the median of the ``healthy`` runs at the
same batch size (measured, same run of the benchmark) and with the ideal
``count × delay / V`` (the healthy volunteers' speed alone; the slow one's tenth
and the frozen one's few items are left out of it, so the ideal is what the
run would take if the bad volunteer were not there at all).

The items come as from a pipe: written, then stdin closed, so the root knows
where the input ends (and shares the last items out, as in a real pipeline).
Copies come from the root's JSON status (``PANDO_DEBUG=monitoring``), the last
one, which the root writes as it exits.
"""
from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from typing import IO, Any, Callable

from common import (MODULES, LineClock, Lines, Procs, free_port, fmt, json_statuses, log, ratio, stderr_collector,
                    summary, table, wait_for, wait_port, wait_volunteers)
from overhead import items_bytes, rotate, squares_digest

MODULE = MODULES / "straggler_square.py"
SCENARIOS = ("healthy", "slow", "frozen", "verify")
#: The copy counters of the status object, kept with every run.
COUNTERS = ("lent", "relent", "done", "speculative", "timed_out", "retried", "disagreements")


def _volunteer_envs(procs: Procs, scenario: str, params: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """(name, environment) of each volunteer of a scenario: the healthy ones, then the bad one if any."""
    delay = str(params["delay_s"])
    out = [(f"ok{i}", procs.env(PANDO_BENCH_DELAY=delay)) for i in range(params["volunteers"])]
    if scenario == "slow":
        out.append(("slow", procs.env(PANDO_BENCH_DELAY=delay, PANDO_BENCH_SLOW=str(params["slow_factor"]))))
    elif scenario == "frozen":
        out.append(("frozen", procs.env(PANDO_BENCH_DELAY=delay, PANDO_BENCH_FREEZE_AT=str(params["freeze_at"]))))
    return out


def _write(stdin: IO[bytes], data: bytes) -> None:
    """Write the items and close stdin; a root that died early is reported by its exit status."""
    try:
        stdin.write(data)
        stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass


def _longest_pause(samples: list[tuple[float, int]], start: float) -> float:
    """The longest time the output stood still (from the first write): how long a stuck item held it back."""
    times = [start] + [t for t, _ in samples]
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def _final_status(err: Lines, count: int, timeout: float) -> dict[str, Any] | None:
    """The last status, once one counts every result written (the root's at its exit); None if none came in time."""
    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        found[:] = [s for s in json_statuses(err) if s["items"].get("written", 0) >= count]
        return bool(found)

    try:
        wait_for(arrived, timeout, "a status with every result written", step=0.05)
    except RuntimeError:
        return None
    return found[-1]


def _exit_time(popen: subprocess.Popen[bytes], since: float, timeout: float) -> float | None:
    """Seconds from ``since`` until the process exited (waiting up to ``timeout``), None if it did not."""
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
    return max(0.0, time.monotonic() - since)  # an upper bound: when this wait saw it


def run_one(scenario: str, batch: int | str, params: dict[str, Any]) -> dict[str, Any]:
    """One run of a scenario at one batch size (or ``auto``); the time, the copy counts, exactness."""
    count = params["count"]
    procs = Procs()
    try:
        port = free_port()
        args = ["--stdin", "--start-idle", "--batch-size", str(batch), "--heartbeat", str(params["heartbeat_ms"]),
                "--reporting-interval", str(params["reporting_interval_s"])]
        if scenario == "verify":
            args += ["--verify", "2"]
        root = procs.pando(MODULE, *args, port=port, env=procs.env(PANDO_DEBUG="monitoring"))
        err = stderr_collector(root)
        wait_port(port)
        vols = [procs.volunteer(port, 1, name, env=env) for name, env in _volunteer_envs(procs, scenario, params)]
        wait_volunteers(vols, 1, settle=0.3 + 0.05 * len(vols))
        stdin, stdout = root.stdin, root.stdout
        assert stdin is not None and stdout is not None
        clock = LineClock(stdout, keep=True)
        start = time.monotonic()
        threading.Thread(target=_write, args=(stdin, items_bytes(count)), daemon=True).start()
        limit = params["run_timeout_s"]
        try:
            wait_for(lambda: clock.count >= count or root.poll() is not None, limit, "the last result", step=0.01)
        except RuntimeError:
            pass  # reported below as missing lines
        seconds = (clock.last or time.monotonic()) - start
        try:
            code: int | None = root.wait(60)
        except subprocess.TimeoutExpired:
            code = None  # reported as such; cleanup kills it
        exited = time.monotonic()
        exit_s = exited - (clock.last or exited)
        clock.join(10)
        status = _final_status(err, count, 10) if clock.count >= count else None
        counters = {key: (status or {}).get("items", {}).get(key) for key in COUNTERS}
        devices = {d["name"]: d for d in (status or {}).get("devices", [])}
        bad = None
        if scenario in ("slow", "frozen"):
            # The slow or frozen volunteer: what it was credited with, what it still held, and whether
            # it left once the root said the job was over (its worker may be stuck in an item).
            device = devices.get(scenario)
            bad = {"connected": device is not None, "items": device["items"] if device else None,
                   "held": device["held"] if device else None,
                   "left_after_root_s": _exit_time(vols[-1].popen, exited, 10)}
            if scenario == "frozen" and device is not None:
                # It computed freeze_at - 1 items before hanging; any not credited were never sent.
                bad["results_withheld"] = params["freeze_at"] - 1 - device["items"]
        return {
            "scenario": scenario, "batch": batch, "count": count, "volunteers": len(vols),
            "seconds": seconds, "exit": code, "root_exit_after_last_line_s": exit_s,
            "exact": hashlib.sha1(clock.text()).hexdigest() == squares_digest(count), "lines": clock.count,
            "status_found": status is not None, **counters,
            "extra_copies_lent": (counters["lent"] - counters["done"]) if status else None,
            "longest_pause_s": _longest_pause(clock.samples, start),
            "bad_volunteer": bad,
            "stderr_tail": [line for line in err if not line.startswith("{") and "Serving" not in line][-5:],
        }
    finally:
        procs.cleanup()


def run(params: dict[str, Any]) -> dict[str, Any]:
    """Every scenario at every batch size, alternated and repeated; medians and ratios."""
    runs: list[dict[str, Any]] = []
    configs = [(scenario, batch) for batch in params["batches"] for scenario in SCENARIOS]
    for rep in range(params["reps"]):
        for scenario, batch in rotate(configs, rep):
            result = run_one(scenario, batch, params)
            result["rep"] = rep
            runs.append(result)
            log(f"stragglers rep {rep} {scenario} b={batch}: {result['seconds']:.2f} s, speculative "
                f"{result['speculative']}, exact={result['exact']}")
    return {"params": params, "runs": runs, "summary": summarize(runs, params)}


def summarize(runs: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    ideal = params["count"] * params["delay_s"] / params["volunteers"]
    out: dict[str, Any] = {"ideal_s": ideal, "by": {}}
    for batch in params["batches"]:
        base = summary(r["seconds"] for r in runs if r["scenario"] == "healthy" and r["batch"] == batch)["median"]
        for scenario in SCENARIOS:
            sel = [r for r in runs if r["scenario"] == scenario and r["batch"] == batch]
            seconds = summary(r["seconds"] for r in sel if r["exact"])
            speculative = summary(r["speculative"] for r in sel if r["speculative"] is not None)
            out["by"][f"{scenario}:{batch}"] = {
                "seconds": seconds,
                "vs_healthy": ratio(seconds["median"], base),
                # In seconds too: a tail of about one straggler floor is a fixed cost, large on short runs.
                "over_healthy_s": seconds["median"] - base if seconds["median"] is not None and base else None,
                # --verify computes each item twice: its ideal is twice as long.
                "vs_ideal": ratio(seconds["median"], ideal * (2 if scenario == "verify" else 1)),
                "speculative": speculative,
                "speculative_share": ratio(speculative["median"], params["count"]),
                "extra_copies_lent": summary(r["extra_copies_lent"] for r in sel if r["extra_copies_lent"] is not None),
                "longest_pause_s": summary(r["longest_pause_s"] for r in sel),
                "all_exact": all(r["exact"] for r in sel),
                # Answers the frozen volunteer computed before hanging but never sent (see the module).
                "results_withheld": summary(r["bad_volunteer"].get("results_withheld") for r in sel
                                            if r["bad_volunteer"]) if scenario == "frozen" else None,
            }
    def worst(scenarios: tuple[str, ...], key: str) -> float | None:
        values = [out["by"][f"{s}:{b}"][key] for s in scenarios for b in params["batches"]]
        return max((v for v in values if v is not None), default=None)

    bad = [r["bad_volunteer"] for r in runs if r["bad_volunteer"]]
    out["bad_volunteers_left"] = sum(b["left_after_root_s"] is not None for b in bad), len(bad)
    out["goals"] = {
        "straggler_slowdown": worst(("slow", "frozen"), "vs_healthy"),  # goal ≤ 1.10
        "speculative_share": worst(("slow", "frozen"), "speculative_share"),  # goal < 0.02
        "verify_cost": worst(("verify",), "vs_healthy"),  # goal ≤ 2.1
    }
    return out


def markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    s = result["summary"]
    labels = {"healthy": f"{p['volunteers']} healthy volunteers (baseline)",
              "slow": f"+ 1 volunteer {p['slow_factor']}× slower",
              "frozen": f"+ 1 volunteer frozen on its item {p['freeze_at']}",
              "verify": "healthy, --verify 2"}
    rows = []
    for batch in p["batches"]:
        for scenario in SCENARIOS:
            st = s["by"][f"{scenario}:{batch}"]
            share = st["speculative_share"]
            over = st["over_healthy_s"]
            rows.append([labels[scenario], str(batch), fmt(st["seconds"]["median"], 2),
                         "–" if over is None or scenario == "healthy" else f"{over:+.2f}", fmt(st["vs_healthy"], 3),
                         fmt(st["vs_ideal"], 3), fmt(st["speculative"]["median"]),
                         "–" if share is None else f"{100 * share:.2f}%", fmt(st["extra_copies_lent"]["median"]),
                         fmt(st["longest_pause_s"]["median"], 2), "yes" if st["all_exact"] else "NO"])
    g = s["goals"]

    def goal(value: float | None, ok: Callable[[float], bool], text: str) -> str:
        return f"{text}: {'–' if value is None else ('met' if ok(value) else 'NOT met')}"

    return "\n".join([
        f"{p['count']:,} items of {p['delay_s']} s (sleep), one-worker volunteers, --heartbeat {p['heartbeat_ms']}, "
        f"median of {p['reps']} alternated run(s). Ideal = items × item time ÷ {p['volunteers']} healthy volunteers "
        f"= {s['ideal_s']:.2f} s (×2 under --verify 2); \"÷ baseline\" divides by the median of the healthy-only runs "
        "at the same batch size. Copies from the root's JSON status after the last result. Longest output pause: "
        "the longest time no result line came; with the frozen volunteer, how long its item held the output back "
        "(the straggler floor is one --heartbeat).",
        "",
        table(["volunteers", "batch", "seconds", "− baseline s", "÷ baseline", "÷ ideal", "speculative copies", "of items",
               "copies lent beyond one per item", "longest output pause s", "exact"], rows),
        "",
        f"Frozen volunteer: results it computed before hanging but never sent, median "
        + ", ".join(f"{fmt(s['by'][f'frozen:{b}']['results_withheld']['median'])} at b={b}" for b in p["batches"])
        + f". Slow or frozen volunteers that left when the root ended: {s['bad_volunteers_left'][0]} of "
        f"{s['bad_volunteers_left'][1]}.",
        "",
        "Goals: " + "; ".join([
            goal(g["straggler_slowdown"], lambda v: v <= 1.10,
                 f"a slow or frozen volunteer costs ≤ 10% (worst ÷ baseline {fmt(g['straggler_slowdown'], 3)})"),
            goal(g["speculative_share"], lambda v: v < 0.02,
                 f"speculative copies < 2% of items (worst {fmt(100 * (g['speculative_share'] or 0), 2)}%)"),
            goal(g["verify_cost"], lambda v: v <= 2.1, f"--verify 2 ≤ 2.1× (worst {fmt(g['verify_cost'], 2)}×)"),
        ]) + ".",
    ])
