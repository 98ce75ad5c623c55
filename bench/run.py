"""Run the benchmarks at one size; write one JSON file and a Markdown summary per run.

    python bench/run.py quick|full|smoke [--only overhead,frames,scaling,join,churn,memory,collatz,browser,stragglers,
                                                journal,webrtc,tree,batching,profile]
                                         [--readme] [--results DIR]

Results go to bench/results/ (git-ignored; or DIR): ``<UTC time>-<size>.json``
holds the machine facts, versions, parameters, every run and the medians and
spreads; ``<same>.md`` and ``latest-<size>.md`` the summary. With ``--readme``
the summary also replaces the results section of bench/README.md. ``smoke`` is
the smallest size of every workload without a peer, for test/test_bench.py.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import batching  # noqa: E402
import browser  # noqa: E402
import churn  # noqa: E402
import collatz  # noqa: E402
import frames  # noqa: E402
import journal_cost  # noqa: E402
import memory  # noqa: E402
import overhead  # noqa: E402
import profile_root  # noqa: E402
import scaling  # noqa: E402
import stragglers  # noqa: E402
import tree  # noqa: E402
import webrtc  # noqa: E402
from common import BENCH, RESULTS, fmt, log, machine_info, table, write_json  # noqa: E402

#: The tree simulation's costs when no real run calibrated them (seconds; see bench/tree_sim.py's Costs).
TREE_SIM_DEFAULTS = {"frame": 0.001, "offer": 0.003, "answer": 0.002, "open": 0.035, "open_trips": 4,
                     "root_attempt": 0.003, "root_socket": 0.001, "frame_cpu": 0.0002}

SIZES: dict[str, dict[str, Any]] = {
    "quick": {
        "overhead": {"volunteers": [1, 4, 16], "batches": [1, 8, 64, 256], "count": 20_000, "count_batch1": 4_000,
                     "pool_chunksize": 1024, "dask_count": 2_000, "dask_workers": [1, 4], "parallel_count": 40,
                     "parallel_workers": [4], "reps": 1},
        "frames": {"seconds": 1.0},
        "scaling": {"tasks": [1.0, 0.1], "sizes": [1, 10, 100, 1000], "rounds": {"1.0": 3, "0.1": 10}, "reps": 1,
                    "batch": 1},
        "churn": {"reps": 1, "volunteers": 4, "count": 400, "delay_s": 0.05, "heartbeat_ms": 1000, "events": 3,
                  "interval_s": 1.2, "resume_after_s": 3.0},
        "memory": {"count": 300_000, "volunteers": 4, "batch": 256, "interval_ms": 1000, "sample_s": 0.25},
        "collatz": {"count": 12, "range": 6000, "reps": 1, "start_reps": 11},
        "browser": {"first_result": {"reps": 3, "range": 20}, "throughput": {"reps": 3, "count": 12, "range": 2000}},
        "stragglers": {"volunteers": 4, "count": 600, "delay_s": 0.03, "batches": [1, 8, "auto"], "heartbeat_ms": 1000,
                       "reporting_interval_s": 0.25, "slow_factor": 10, "freeze_at": 20, "reps": 2,
                       "run_timeout_s": 120},
        "journal": {"volunteers": 4, "batches": [1, 64], "count": 100_000, "count_batch1": 6_000, "reps": 5},
        "webrtc": {"join": {"rounds": 1, "sequential": 20, "crowds": 2, "crowd": 30, "task_s": 0.5, "items": 20_000,
                            "timeout_s": 90},
                   "throughput": {"volunteers": 4, "batches": [1, 16, 64, 256], "reps": 2, "run_timeout_s": 300,
                                  "counts": {"1": 3_000, "16": 50_000, "64": 100_000, "256": 200_000}},
                   "profile": {"batch": 64, "count": 100_000}},
        "tree": {"real": {"runs": [[60, 1.0, 4], [60, 0.1, 4]], "reps": 1, "heartbeat_ms": 2000, "batch": 1,
                          "steady_s": 8, "join_timeout_s": 60, "heal_limit_hb": 8, "nodes_per_process": 150,
                          "head_start_s": 0.1, "calibration_rounds": 5, "timeout_s": 600},
                 "sim": {"sizes": [1000, 10000], "tasks": [1.0, 0.1], "batches": [1, 2], "degree": 10,
                         "heartbeat_ms": 2000, "nets": {"LAN": 0.0005, "Internet": 0.02},
                         "flow_seconds": {"1.0": 10.0, "0.1": 2.0}, "flow_skip": [["Internet", 10000]],
                         "balanced_sizes": [1000], "defaults": TREE_SIM_DEFAULTS}},
        "profile": None,
        "batching": batching.PARAMS["quick"],
    },
    "full": {
        "overhead": {"volunteers": [1, 4, 16], "batches": [1, 8, 64, 256], "count": 200_000, "count_batch1": 20_000,
                     "pool_chunksize": 1024, "dask_count": 20_000, "dask_workers": [1, 4, 16],
                     "parallel_count": 200, "parallel_workers": [1, 4, 16], "reps": 3},
        "frames": {"seconds": 3.0, "reps": 3},
        "scaling": {"tasks": [1.0, 0.1], "sizes": [1, 10, 100, 500, 1000], "rounds": {"1.0": 10, "0.1": 20},
                    "reps": 2, "batch": 1},
        "churn": {"reps": 3, "volunteers": 4, "count": 1600, "delay_s": 0.05, "heartbeat_ms": 1000, "events": 9,
                  "interval_s": 1.5, "resume_after_s": 3.0},
        "memory": {"count": 10_000_000, "volunteers": 4, "batch": 256, "interval_ms": 5000, "sample_s": 1.0},
        "collatz": {"count": 40, "range": 10000, "reps": 3, "start_reps": 21},
        "browser": {"first_result": {"reps": 7, "range": 20}, "throughput": {"reps": 5, "count": 40, "range": 5000}},
        "stragglers": {"volunteers": 4, "count": 2400, "delay_s": 0.03, "batches": [1, 16, "auto"], "heartbeat_ms": 1000,
                       "reporting_interval_s": 0.25, "slow_factor": 10, "freeze_at": 20, "reps": 3,
                       "run_timeout_s": 300},
        "journal": {"volunteers": 4, "batches": [1, 64, 256], "count": 200_000, "count_batch1": 20_000, "reps": 7},
        "webrtc": {"join": {"rounds": 2, "sequential": 20, "crowds": 3, "crowd": 30, "task_s": 0.5, "items": 40_000,
                            "timeout_s": 120},
                   "throughput": {"volunteers": 4, "batches": [1, 16, 64, 256], "reps": 5, "run_timeout_s": 600,
                                  "counts": {"1": 6_000, "16": 100_000, "64": 200_000, "256": 400_000}},
                   "profile": {"batch": 64, "count": 200_000}},
        "tree": {"real": {"runs": [[30, 1.0, 10], [100, 1.0, 10], [100, 0.1, 10], [200, 1.0, 10], [60, 1.0, 4],
                                   [60, 0.1, 4]], "reps": 2, "heartbeat_ms": 2000, "batch": 1, "steady_s": 12,
                          "join_timeout_s": 120, "heal_limit_hb": 10, "nodes_per_process": 150,
                          "head_start_s": 0.1, "calibration_rounds": 9, "timeout_s": 3600},
                 "sim": {"sizes": [1000, 10000], "tasks": [1.0, 0.1], "batches": [1, 2], "degree": 10,
                         "heartbeat_ms": 2000, "nets": {"LAN": 0.0005, "Internet": 0.02},
                         "flow_seconds": {"1.0": 20.0, "0.1": 4.0}, "balanced_sizes": [1000, 10000],
                         "defaults": TREE_SIM_DEFAULTS}},
        "profile": {"volunteers": 4, "batches": [64, 8, 1], "count": 200_000},
        "batching": batching.PARAMS["full"],
    },
    # Every workload that needs no benchmark peer (Dask, GNU parallel, py-spy), as small as it runs:
    # test/test_bench.py checks that each still runs and that its outputs are exact, not its figures.
    "smoke": {
        "overhead": None,
        "frames": {"seconds": 0.2},
        "scaling": {"tasks": [0.1], "sizes": [1, 20], "rounds": {"0.1": 5}, "reps": 1, "batch": 1},
        "churn": {"reps": 1, "volunteers": 2, "count": 60, "delay_s": 0.02, "heartbeat_ms": 1000, "events": 1,
                  "interval_s": 0.5, "resume_after_s": 1.0},
        "memory": {"count": 20_000, "volunteers": 2, "batch": 256, "interval_ms": 200, "sample_s": 0.1},
        "collatz": {"count": 4, "range": 500, "reps": 1, "start_reps": 1},
        "browser": {"first_result": {"reps": 1, "range": 20}, "throughput": {"reps": 1, "count": 4, "range": 200}},
        "stragglers": {"volunteers": 2, "count": 60, "delay_s": 0.01, "batches": ["auto"], "heartbeat_ms": 1000,
                       "reporting_interval_s": 0.25, "slow_factor": 5, "freeze_at": 10, "reps": 1,
                       "run_timeout_s": 60},
        "journal": {"volunteers": 2, "batches": [64], "count": 5_000, "count_batch1": 500, "reps": 1},
        "webrtc": {"join": {"rounds": 1, "sequential": 2, "crowds": 1, "crowd": 12, "task_s": 0.2, "items": 500,
                            "timeout_s": 60},
                   "throughput": {"volunteers": 2, "batches": [16], "reps": 1, "run_timeout_s": 60,
                                  "counts": {"16": 2_000}},
                   "profile": None},
        "tree": {"real": {"runs": [[12, 0.2, 3]], "reps": 1, "heartbeat_ms": 1000, "batch": 1,
                          "steady_s": 1, "join_timeout_s": 30, "heal_limit_hb": 8, "nodes_per_process": 150,
                          "head_start_s": 0.1, "calibration_rounds": 1, "timeout_s": 120},
                 "sim": {"sizes": [100], "tasks": [1.0], "batches": [1], "degree": 10,
                         "heartbeat_ms": 2000, "nets": {"LAN": 0.0005}, "flow_seconds": {"1.0": 1.0},
                         "flow_skip": [], "balanced_sizes": [100], "defaults": TREE_SIM_DEFAULTS}},
        "profile": None,
        "batching": batching.PARAMS["smoke"],
    },
}


#: Workloads run and summarised the same way (``run(params)``, ``markdown(result)``), in report order
#: after the first three, with their section titles.
PLAIN = [("churn", churn, "4. Churn"), ("memory", memory, "5. Memory"), ("collatz", collatz, "6. Collatz speedup"),
         ("browser", browser, "7. Browser volunteers (Chromium + Pyodide)"),
         ("stragglers", stragglers, "8. Stragglers and `--verify 2`"),
         ("journal", journal_cost, "9. Cost of `--journal FILE`"), ("webrtc", webrtc, "10. WebRTC data channels"),
         ("tree", tree, "11. The tree (`--degree`)"), ("batching", batching, "12. Fast by default (`--batch-size auto`)")]


def summary_markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    parts = [
        f"### `{result['size']}` run of {result['started']} UTC",
        "",
        f"{machine['cpu']} × {machine['cpus']} CPUs, {machine['memory_gib']} GiB, Linux {machine['kernel']}, "
        f"Python {machine['python']}; pando {machine['versions']['pando']} at "
        f"{machine['git'].get('commit', '?')[:10]}{' (pando/ modified)' if machine['git'].get('pando_dirty') else ''}, "
        f"websockets {machine['versions']['websockets']}, dask {machine['versions']['dask']}, "
        f"{machine['versions']['gnu-parallel'] or 'no GNU parallel'}. Load average at start "
        f"{', '.join(f'{x:.1f}' for x in machine['loadavg_at_start'])}; took {result['seconds'] / 60:.1f} min.",
    ]
    w = result["workloads"]
    if "overhead" in w:
        parts += ["", "#### 1. Overhead (items/s, end to end)", "", overhead.markdown(w["overhead"])]
        ratios = w["overhead"]["summary"]["ratios"].get("4")
        if ratios:
            parts += ["", f"Target: ≥ 50,000 items/s with 4 volunteers and a good batch size, ≥ 10× Dask: "
                          f"best {fmt(ratios['pando'])} items/s at b={ratios['best_batch']}, "
                          f"{fmt(ratios.get('pando/dask'), 1)}× Dask — "
                          f"{'met' if ratios['pando'] >= 50_000 and (ratios.get('pando/dask') or 0) >= 10 else 'NOT met'}."]
    if "frames" in w:
        f = w["frames"]
        parts += ["", "#### Frame ceiling (websockets threaded API, 32-byte frames, loopback)", "",
                  table(["sequential round trips/s", "pipelined round trips/s"],
                        [[fmt(f["sequential_per_s"]), fmt(f["pipelined_per_s"])]])]
        if "overhead" in w and w["overhead"]["summary"]["ratios"].get("4"):
            best = w["overhead"]["summary"]["ratios"]["4"]["pando"]
            parts += ["", f"Pando's best with 4 volunteers is {best / f['pipelined_per_s']:.1f}× the pipelined frame "
                          f"rate: it needs ≥ {best / f['pipelined_per_s']:.1f} items per frame on average (a result "
                          "frame and a lend frame per batch)."]
    if "scaling" in w:
        parts += ["", "#### 2. Scaling efficiency", "", scaling.markdown(w["scaling"])]
    if "join" in w:
        j = w["join"]
        parts += ["", "#### 3. Join (1000 sessions at once; t0 → first `lend`)", "",
                  table(["sessions", "task s", "p50 s", "p95 s", "time to 95% s", "max s", "sessions with an item",
                         "SYNs dropped (ListenOverflows)", "root exit after last line s"],
                        [[str(r["n"]), str(r["task_s"]), fmt(r["join_p50_s"], 2), fmt(r["join_p95_s"], 2),
                          fmt(r["join_95pct_of_n_s"], 2), fmt(r["join_max_s"], 2), str(r["sessions_with_item"]),
                          fmt(r.get("listen_overflows")), fmt(r.get("root_exit_after_last_line_s"), 1)]
                         for r in j["runs"]]),
                  "", "Original Pando: 19–23 s to 95% on a LAN."]
    for name, workload, title in PLAIN:
        if name in w:
            parts += ["", f"#### {title}", "", workload.markdown(w[name])]
    if "profile" in w:
        parts += ["", "#### Root profile (py-spy, GIL-holding samples)", ""]
        for key, r in w["profile"].items():
            parts += [profile_root.markdown(f"4 volunteers × batch {key.split('x')[1]}", r["analysis"], r["run"])]
    return "\n".join(parts) + "\n"


def update_readme(text: str) -> None:
    path = BENCH / "README.md"
    readme = path.read_text()
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    if begin in readme and end in readme:
        head, rest = readme.split(begin, 1)
        tail = rest.split(end, 1)[1]
        path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("size", choices=sorted(SIZES))
    parser.add_argument("--only", default="")
    parser.add_argument("--readme", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON and Markdown go")
    args = parser.parse_args()
    results = args.results
    params = SIZES[args.size]
    only = set(filter(None, args.only.split(",")))
    wanted = lambda name: (not only or name in only) and params.get(name) is not None  # noqa: E731
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    t0 = time.monotonic()
    result: dict[str, Any] = {"size": args.size, "started": started, "machine": machine_info(), "workloads": {}}
    w = result["workloads"]
    if wanted("frames"):
        reps = params["frames"].get("reps", 1)
        runs = [frames.measure(params["frames"]["seconds"]) for _ in range(reps)]
        w["frames"] = {"params": params["frames"], "runs": runs,
                       "sequential_per_s": sorted(r["sequential_per_s"] for r in runs)[len(runs) // 2],
                       "pipelined_per_s": sorted(r["pipelined_per_s"] for r in runs)[len(runs) // 2]}
        log(f"frames: {w['frames']['sequential_per_s']:,.0f} sequential, {w['frames']['pipelined_per_s']:,.0f} "
            "pipelined round trips/s")
    if wanted("overhead"):
        w["overhead"] = overhead.run(params["overhead"])
    if wanted("scaling"):
        w["scaling"] = scaling.run(params["scaling"])
        joins = [r for r in w["scaling"]["runs"] if r["n"] >= 1000]
        if joins:
            w["join"] = {"runs": joins}
    for name, workload, _ in PLAIN:
        if wanted(name):
            w[name] = workload.run(params[name])
    if wanted("profile"):
        p = params["profile"]
        counts = {0: p["count"], 1: min(p["count"], 10_000), 8: min(p["count"], 100_000)}
        w["profile"] = profile_root.run(p["volunteers"], p["batches"], counts, RESULTS / "profiles")
    result["seconds"] = time.monotonic() - t0
    stamp = started.replace(":", "")
    write_json(results / f"{stamp}-{args.size}.json", result)
    text = summary_markdown(result)
    (results / f"{stamp}-{args.size}.md").write_text(text)
    (results / f"latest-{args.size}.md").write_text(text)
    if args.readme:
        update_readme(text)
    print(text)
    log(f"wrote {results / f'{stamp}-{args.size}.json'} and .md ({result['seconds'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
