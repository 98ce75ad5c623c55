"""Workload 12, fast by default: `--batch-size auto` (the default) against hand-tuned batch sizes.

    python bench/batching.py quick|full

- *Overhead*: ``examples/square_fast.py`` through 4 one-worker volunteers that joined first
  (bench/overhead.py's run: first item written → last line read, root CPU from ``wait4``), the
  defaults against ``--batch-size`` B pinned, and ``multiprocessing.Pool.imap`` (4 workers,
  chunksize 1024) — alternated, repeated; medians.
- *End to end*: the same with the defaults, timed from the root's start to its exit, the
  volunteers started with it (their start-up and joining count) and every item on stdin at once.
- *Slow and mixed items* (``modules/timed_square.py``, item ``"X T"`` sleeps T s): 4 one-worker
  volunteers that joined first, the defaults; slow = every item 0.25 s; mixed = times log-uniform
  over 1 ms – 1 s (1000×), from a fixed seed. Ideal = the items' summed time ÷ 4 (or the longest
  item, if more); time = first item written → last line read.
- *Many sessions*: bench/scaling.py's swarm (1,000 emulated one-worker sessions) on 1 s and 0.1 s
  items with the defaults; efficiency with join and steady, as workload 2 measures them.

Every output is checked whole. Goals (issue "Fast by default"): defaults ≥ 0.8× the best pinned
batch size and ≥ 50,000 items/s end to end; best ≥ 0.6× Pool.imap; slow and mixed within 10% of
ideal; 1,000 sessions ≥ 98% (1 s) and ≥ 90% (0.1 s) efficient.
"""
from __future__ import annotations

import hashlib
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead  # noqa: E402
import scaling  # noqa: E402
from common import (MODULES, LineClock, Procs, fmt, free_port, log, machine_info, ratio, stderr_collector,  # noqa: E402
                    summary, table, wait_port, wait_rusage, wait_volunteers)

PARAMS: dict[str, dict[str, Any]] = {
    "quick": {"volunteers": 4, "batches": [64, 256, 1024], "count": 200_000, "reps": 3, "e2e_count": 500_000,
              "slow": {"count": 40, "seconds": 0.25}, "mixed": {"count": 120, "low": 0.001, "high": 1.0},
              "swarm": {"n": 1000, "rounds": {"1.0": 6, "0.1": 60}}, "pool_chunksize": 1024},
    "full": {"volunteers": 4, "batches": [64, 256, 1024, 4096], "count": 500_000, "reps": 5, "e2e_count": 1_000_000,
             "slow": {"count": 80, "seconds": 0.25}, "mixed": {"count": 240, "low": 0.001, "high": 1.0},
             # Long enough at 0.1 s (20 s of work) for the join ramp and the tail not to decide the figure.
             "swarm": {"n": 1000, "rounds": {"1.0": 20, "0.1": 200}}, "pool_chunksize": 1024},
    "smoke": {"volunteers": 2, "batches": [64], "count": 5_000, "reps": 1, "e2e_count": 5_000,
              "slow": {"count": 4, "seconds": 0.1}, "mixed": {"count": 6, "low": 0.001, "high": 0.1},
              "swarm": {"n": 20, "rounds": {"1.0": 2, "0.1": 5}}, "pool_chunksize": 256},
}
TIMED = MODULES / "timed_square.py"


def end_to_end(volunteers: int, count: int) -> dict[str, Any]:
    """Defaults; the clock runs from the root's start to its exit, volunteers started with it."""
    procs = Procs()
    try:
        port = free_port()
        start = time.monotonic()
        root = procs.pando(overhead.MODULE, "--stdin", "--start-idle", port=port)
        err = stderr_collector(root)
        clock = LineClock(root.stdout, keep=True)
        threading.Thread(target=overhead._feed, args=(root.stdin, overhead.items_bytes(count)), daemon=True).start()
        wait_port(port)
        for i in range(volunteers):
            procs.volunteer(port, 1, f"v{i}")
        cpu = wait_rusage(root, 600)
        seconds = time.monotonic() - start
        clock.join(10)
        exact = clock.count == count and hashlib.sha1(clock.text()).hexdigest() == overhead.squares_digest(count)
        return {"count": count, "seconds": seconds, "items_per_s": count / seconds, "exit": root.returncode,
                "exact": exact, "root_cpu_s": cpu, "stderr_tail": [line for line in err if "Serving" not in line][-5:]}
    finally:
        procs.cleanup()


def timed_items(kind: str, params: dict[str, Any]) -> list[tuple[int, float]]:
    """(x, seconds) per item: all the same (slow), or log-uniform over [low, high] from a fixed seed (mixed)."""
    if kind == "slow":
        return [(i, params["seconds"]) for i in range(params["count"])]
    rng = random.Random(20261126)
    low, high = params["low"], params["high"]
    return [(i, round(low * (high / low) ** rng.random(), 6)) for i in range(params["count"])]


def timed(volunteers: int, items: list[tuple[int, float]]) -> dict[str, Any]:
    """Defaults, volunteers joined first; time = first item written → last line read."""
    procs = Procs()
    try:
        port = free_port()
        root = procs.pando(TIMED, "--stdin", "--start-idle", port=port)
        err = stderr_collector(root)
        wait_port(port)
        vols = [procs.volunteer(port, 1, f"v{i}") for i in range(volunteers)]
        wait_volunteers(vols, 1, settle=0.5)
        clock = LineClock(root.stdout, keep=True)
        data = "".join(f"{x} {t}\n" for x, t in items).encode()
        start = time.monotonic()
        threading.Thread(target=overhead._feed, args=(root.stdin, data), daemon=True).start()
        wait_rusage(root, 600)
        clock.join(10)
        seconds = (clock.last or time.monotonic()) - start
        ideal = max(sum(t for _, t in items) / volunteers, max(t for _, t in items))
        exact = clock.text() == "".join(f"{x * x}\n" for x, _ in items).encode()
        return {"count": len(items), "seconds": seconds, "ideal_s": ideal, "vs_ideal": seconds / ideal,
                "exit": root.returncode, "exact": exact,
                "stderr_tail": [line for line in err if "Serving" not in line][-5:]}
    finally:
        procs.cleanup()


def run(params: dict[str, Any]) -> dict[str, Any]:
    volunteers, reps = params["volunteers"], params["reps"]
    configs: list[Any] = [None, *params["batches"], "pool"]
    runs: list[dict[str, Any]] = []
    for rep in range(reps):
        for config in overhead.rotate(configs, rep):
            if config == "pool":
                result = overhead.run_peer("pool", volunteers, params["count"], params["pool_chunksize"])
            else:
                result = overhead.run_pando(volunteers, config, params["count"])
                result["root_cpu_per_item_us"] = (1e6 * (result["root_cpu_s"] - result["root_cpu_before_s"]) / result["count"]
                                                  if result.get("root_cpu_s") is not None else None)
            result.update(rep=rep, config="defaults" if config is None else str(config))
            runs.append(result)
            log(f"batching rep {rep} {result['config']}: {fmt(result.get('items_per_s'))} items/s "
                f"exact={result.get('exact')}")
    e2e = []
    for rep in range(reps):
        e2e.append(end_to_end(volunteers, params["e2e_count"]))
        log(f"batching end to end rep {rep}: {fmt(e2e[-1]['items_per_s'])} items/s exact={e2e[-1]['exact']}")
    items = {kind: timed_items(kind, params[kind]) for kind in ("slow", "mixed")}
    slow_mixed: dict[str, list[dict[str, Any]]] = {"slow": [], "mixed": []}
    for rep in range(max(1, reps // 2)):
        for kind in ("slow", "mixed"):
            slow_mixed[kind].append(timed(volunteers, items[kind]))
            log(f"batching {kind} rep {rep}: {slow_mixed[kind][-1]['seconds']:.2f} s, "
                f"{slow_mixed[kind][-1]['vs_ideal']:.3f}× ideal, exact={slow_mixed[kind][-1]['exact']}")
    swarm = []
    for task, rounds in params["swarm"]["rounds"].items():
        swarm.append(scaling.run_one(params["swarm"]["n"], float(task), rounds, batch=None))
        log(f"batching swarm {params['swarm']['n']} x {task} s: efficiency {fmt(swarm[-1]['efficiency_total'], 3)} "
            f"(steady {fmt(swarm[-1]['efficiency_steady'], 3)}) exact={swarm[-1]['exact']}")
    return {"params": params, "runs": runs, "end_to_end": e2e, "timed": slow_mixed, "swarm": swarm,
            "summary": summarize(runs, e2e, slow_mixed, swarm)}


def summarize(runs: list[dict[str, Any]], e2e: list[dict[str, Any]], slow_mixed: dict[str, list[dict[str, Any]]],
              swarm: list[dict[str, Any]]) -> dict[str, Any]:
    configs = sorted({r["config"] for r in runs}, key=lambda c: (c != "defaults", c == "pool", int(c) if c.isdigit() else 0))
    rates = {c: summary(r["items_per_s"] for r in runs if r["config"] == c and r.get("exact", True)) for c in configs}
    cpu = {c: summary(r["root_cpu_per_item_us"] for r in runs if r["config"] == c and r.get("root_cpu_per_item_us"))
           for c in configs if c != "pool"}
    pinned = [c for c in configs if c.isdigit() and rates[c]["median"] is not None]
    best = max(pinned, key=lambda c: rates[c]["median"]) if pinned else None
    best_rate = rates[best]["median"] if best else None
    return {
        "configs": configs, "items_per_s": rates, "root_cpu_us": cpu, "best_pinned": best,
        "defaults_vs_best": ratio(rates["defaults"]["median"], best_rate),
        "best_vs_pool": ratio(max(best_rate or 0, rates["defaults"]["median"] or 0), rates.get("pool", {}).get("median")),
        "all_exact": all(r.get("exact", True) for r in runs) and all(r["exact"] for r in e2e),
        "end_to_end": summary(r["items_per_s"] for r in e2e),
        "timed": {kind: summary(r["vs_ideal"] for r in rs) for kind, rs in slow_mixed.items()},
        "timed_exact": all(r["exact"] for rs in slow_mixed.values() for r in rs),
        "swarm": [{"task_s": r["task_s"], "efficiency_total": r["efficiency_total"],
                   "efficiency_steady": r["efficiency_steady"], "efficiency_computing": r["efficiency_computing"],
                   "exact": r["exact"]} for r in swarm],
    }


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    p = result["params"]
    rows = [[c, fmt(s["items_per_s"][c]["median"]), fmt(s["root_cpu_us"].get(c, {}).get("median"), 1)]
            for c in s["configs"]]
    lines = [f"4 one-worker volunteers, `examples/square_fast.py`, {p['count']:,} items, median of {p['reps']} "
             "alternated runs (first item written → last line read, volunteers joined first).", "",
             table(["configuration", "items/s", "root CPU µs/item"], rows), "",
             f"Defaults ÷ best pinned (b={s['best_pinned']}): {fmt(s['defaults_vs_best'], 2)} (goal ≥ 0.8); "
             f"best ÷ Pool.imap: {fmt(s['best_vs_pool'], 2)} (goal ≥ 0.6); every output exact: {s['all_exact']}.", "",
             f"End to end with the defaults (root start → exit, 4 volunteers started with it, {p['e2e_count']:,} items): "
             f"{fmt(s['end_to_end']['median'])} items/s, median of {len(result['end_to_end'])} (goal ≥ 50,000).", ""]
    trows = [[kind, f"{result['timed'][kind][0]['count']}", fmt(result["timed"][kind][0]["ideal_s"], 2),
              fmt(s["timed"][kind]["median"], 3)] for kind in ("slow", "mixed")]
    lines += [table(["items", "count", "ideal s", "time ÷ ideal (median)"], trows),
              f"(goal ≤ 1.10; exact: {s['timed_exact']})", ""]
    def pct(value: float | None) -> str:
        return fmt(100 * value, 1) + "%" if value is not None else "–"

    srows = [[f"{r['task_s']:g}", pct(r["efficiency_total"]), pct(r["efficiency_steady"]),
              pct(r["efficiency_computing"]), "yes" if r["exact"] else "NO"] for r in s["swarm"]]
    lines += [f"{p['swarm']['n']:,} swarm sessions (bench/swarm.py), defaults. Steady: output lines between line N "
              "and line items − N (workload 2's measure); computing: items completed per second from the moment "
              "every session had an item (plus one task) to one task before the last completion.", "",
              table(["task s", "efficiency (with join)", "efficiency (steady)", "efficiency (computing)", "exact"],
                    srows), "(goals: ≥ 98% at 1 s, ≥ 90% at 0.1 s)"]
    return "\n".join(lines)


def main() -> None:
    size = sys.argv[1] if len(sys.argv) > 1 else "quick"
    if size not in PARAMS or len(sys.argv) > 2:
        sys.exit(f"usage: python bench/batching.py [{'|'.join(PARAMS)}]")
    info = machine_info()
    log(f"batching ({size}); load average {info.get('loadavg_at_start')}")
    result = run(PARAMS[size])
    print(markdown(result))


if __name__ == "__main__":
    main()
