"""The paper's figures, redone: square throughput vs volunteers (flat and tree), and collatz speedup. CSV + PNG.

    python bench/paper.py [--rounds R] [--sizes 1 10 100 500 1000] [--collatz-count C] [--collatz-range R]
                          [--tree-sizes 10 30 100] [--tree-sim-sizes 1000 10000]

Square: bench/swarm.py sessions on examples/square.py (1 s per item), N
sessions, batch size 1, like the paper's tabs; throughput and efficiency
(throughput ÷ N items/s), steady and including the join ramp, beside the
original's 82% at 10 tabs and 54% at 1000. Tree: the same 1 s items through a
``--degree 10`` tree (bench/tree.py): real volunteers over data channels at
the ``--tree-sizes``, and the simulated tree (bench/tree_sim.py, LAN scenario,
calibrated by those runs) at the ``--tree-sim-sizes``, beside the flat
WebSocket sessions above: steady throughput and efficiency. Collatz:
examples/collatz.py with 1 and 2 native volunteers against ``--local``.
Files: bench/results/ paper-square.{csv,png}, paper-tree.{csv,png},
paper-collatz.{csv,png}, paper-<time>.json.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import collatz  # noqa: E402
import run as runner  # noqa: E402
import scaling  # noqa: E402
import tree  # noqa: E402
from common import RESULTS, log, machine_info, write_json  # noqa: E402

ORIGINAL_EFFICIENCY = {10: 0.82, 1000: 0.54}  # the original Pando, square experiment (1 s items, browser tabs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100, 500, 1000])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--collatz-count", type=int, default=40)
    parser.add_argument("--collatz-range", type=int, default=10000)
    parser.add_argument("--collatz-reps", type=int, default=3)
    parser.add_argument("--tree-sizes", type=int, nargs="*", default=[10, 30, 100])
    parser.add_argument("--tree-sim-sizes", type=int, nargs="*", default=[1000, 10000])
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    square = scaling.run({"tasks": [1.0], "sizes": args.sizes, "rounds": {"1.0": args.rounds}, "reps": 1, "batch": 1})
    rows = []
    for r in square["runs"]:
        rows.append({"volunteers": r["n"], "items_per_s": round(r["items_per_s"], 3),
                     "ideal_items_per_s": r["ideal_items_per_s"],
                     "efficiency_with_join": round(r["efficiency_total"], 4),
                     "efficiency_steady": round(r["efficiency_steady"], 4) if r["efficiency_steady"] else "",
                     "original_efficiency": ORIGINAL_EFFICIENCY.get(r["n"], ""),
                     "join_p95_s": round(r["join_p95_s"], 3) if r["join_p95_s"] is not None else "",
                     "exact": r["exact"]})
    with open(RESULTS / "paper-square.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    ns = [r["volunteers"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    left.loglog(ns, [r["ideal_items_per_s"] for r in rows], "k--", label="ideal (N items/s)")
    left.loglog(ns, [r["items_per_s"] for r in rows], "o-", label="this Pando (with join)")
    left.loglog(list(ORIGINAL_EFFICIENCY), [n * e for n, e in ORIGINAL_EFFICIENCY.items()], "s", color="tab:red",
                label="original Pando")
    left.set_xlabel("volunteers (sessions)")
    left.set_ylabel("items/s (1 s per item)")
    left.legend()
    left.grid(True, which="both", alpha=0.3)
    right.semilogx(ns, [100 * r["efficiency_with_join"] for r in rows], "o-", label="with join ramp")
    steady = [(r["volunteers"], 100 * r["efficiency_steady"]) for r in rows if r["efficiency_steady"] != ""]
    if steady:
        right.semilogx(*zip(*steady), "^-", label="steady state")
    right.semilogx(list(ORIGINAL_EFFICIENCY), [100 * e for e in ORIGINAL_EFFICIENCY.values()], "s", color="tab:red",
                   label="original Pando")
    right.axhline(98, color="gray", linestyle=":", label="target 98%")
    right.set_ylim(0, 105)
    right.set_xlabel("volunteers (sessions)")
    right.set_ylabel("efficiency %")
    right.legend(loc="lower left")
    right.grid(True, which="both", alpha=0.3)
    by_n = {r["volunteers"]: r for r in rows}
    ours = ", ".join(f"{100 * by_n[n]['efficiency_with_join']:.0f}% at {n}" for n in ORIGINAL_EFFICIENCY if n in by_n)
    fig.suptitle("Square (1 s per item): original Pando 82% at 10 tabs, 54% at 1000; "
                 f"this Pando {ours} (with join)", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / "paper-square.png", dpi=120)
    plt.close(fig)
    log(f"wrote {RESULTS / 'paper-square.csv'} and .png")

    tree_result = tree_figure(square, args, plt) if args.tree_sizes or args.tree_sim_sizes else None

    cz = collatz.run({"count": args.collatz_count, "range": args.collatz_range, "reps": args.collatz_reps})
    crows = [{"configuration": "--local" if k == "0" else f"{k} volunteer(s)", "volunteers": int(k),
              "seconds_median": round(st["seconds"]["median"], 3), "seconds_min": round(st["seconds"]["min"], 3),
              "seconds_max": round(st["seconds"]["max"], 3), "speedup": round(st["speedup"], 3),
              "efficiency": round(st["efficiency"], 3) if st["efficiency"] else "",
              "same_as_local": st["same_as_local"]} for k, st in cz["summary"].items()]
    with open(RESULTS / "paper-collatz.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(crows[0]))
        writer.writeheader()
        writer.writerows(crows)
    fig, ax = plt.subplots(figsize=(6, 4.4))
    labels = [r["configuration"] for r in crows]
    ax.bar(labels, [r["speedup"] for r in crows], color=["gray", "tab:blue", "tab:blue"])
    ax.plot(labels, [1, 1, 2], "k--", label="ideal")
    for i, r in enumerate(crows):
        ax.text(i, r["speedup"] + 0.03, f"×{r['speedup']:.2f}\n{r['seconds_median']:.1f} s", ha="center",
                va="bottom", fontsize=8)
    ax.set_ylabel("speedup vs --local")
    ax.set_ylim(0, 2.6)
    ax.legend()
    ax.set_title(f"Collatz, {args.collatz_count} ranges of {args.collatz_range} big integers, 2 cores.\n"
                 "Original: its collatz figure (numbers not restated in issue 4); "
                 f"ours: ×{crows[1]['speedup']:.2f} (1), ×{crows[2]['speedup']:.2f} (2)", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "paper-collatz.png", dpi=120)
    plt.close(fig)
    write_json(RESULTS / f"paper-{started.replace(':', '')}.json",
               {"started": started, "machine": machine_info(), "square": square, "tree": tree_result, "collatz": cz})
    log(f"wrote {RESULTS / 'paper-collatz.csv'} and .png")


def tree_figure(square: dict, args: argparse.Namespace, plt: object) -> dict:
    """Square at 1 s per item, flat (the swarm runs above) against the tree (real, then simulated)."""
    quick = runner.SIZES["quick"]["tree"]
    params = {
        "real": {**quick["real"], "runs": [[n, 1.0, 10] for n in args.tree_sizes], "reps": 1, "steady_s": 10}
        if args.tree_sizes else None,
        "sim": {**quick["sim"], "sizes": args.tree_sim_sizes, "tasks": [1.0], "batches": [1],
                "nets": {"LAN": quick["sim"]["nets"]["LAN"]}, "flow_seconds": {"1.0": 10.0}, "flow_skip": [],
                "balanced_sizes": []}
        if args.tree_sim_sizes else None,
    }
    result = tree.run(params)
    rows = []
    for r in square["runs"]:
        if r["efficiency_steady"]:
            rows.append({"method": "flat, real (WebSocket sessions)", "volunteers": r["n"],
                         "items_per_s": round(r["efficiency_steady"] * r["ideal_items_per_s"], 3),
                         "efficiency_steady": round(r["efficiency_steady"], 4),
                         "join_100pct_s": round(r["join_max_s"], 3) if r["join_max_s"] is not None else "",
                         "root_links": r["n"]})
    for r in (result.get("real") or {}).get("runs", []):
        if "error" not in r:
            rows.append({"method": "tree D=10, real (data channels)", "volunteers": r["n"],
                         "items_per_s": round(r["steady"]["items_per_s"], 3),
                         "efficiency_steady": round(r["steady"]["efficiency"], 4),
                         "join_100pct_s": round(r["join"]["to_100pct_s"], 3) if r["join"]["to_100pct_s"] else "",
                         "root_links": r["root_links_max"]})
    for r in (result.get("sim") or {}).get("runs", []):
        for f in r["flows"]:
            rows.append({"method": "tree D=10, simulated (LAN)", "volunteers": r["n"],
                         "items_per_s": round(f["items_per_s"], 3),
                         "efficiency_steady": round(f["efficiency_steady"], 4),
                         "join_100pct_s": round(r["join"]["to_100pct_s"], 3) if r["join"]["to_100pct_s"] else "",
                         "root_links": r["join"]["root_links_max"]})
    with open(RESULTS / "paper-tree.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["method", "volunteers", "items_per_s", "efficiency_steady",
                                                    "join_100pct_s", "root_links"])
        writer.writeheader()
        writer.writerows(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))  # type: ignore[attr-defined]
    ns = sorted({r["volunteers"] for r in rows})
    left.loglog(ns, ns, "k--", label="ideal (N items/s)")
    styles = {"flat, real (WebSocket sessions)": ("o-", "tab:blue", "full"),
              "tree D=10, real (data channels)": ("s-", "tab:green", "full"),
              "tree D=10, simulated (LAN)": ("D:", "tab:green", "none")}
    for method, (style, color, fill) in styles.items():
        sel = sorted((r["volunteers"], r["items_per_s"], r["efficiency_steady"]) for r in rows if r["method"] == method)
        if sel:
            left.loglog([x[0] for x in sel], [x[1] for x in sel], style, color=color, fillstyle=fill, label=method)
            right.semilogx([x[0] for x in sel], [100 * x[2] for x in sel], style, color=color, fillstyle=fill,
                           label=method)
    left.set_xlabel("volunteers")
    left.set_ylabel("items/s, steady (1 s per item)")
    left.legend(fontsize=8)
    left.grid(True, which="both", alpha=0.3)
    right.axhline(95, color="gray", linestyle=":", label="goal 95%")
    right.set_ylim(0, 105)
    right.set_xlabel("volunteers")
    right.set_ylabel("steady efficiency %")
    right.legend(loc="lower left", fontsize=8)
    right.grid(True, which="both", alpha=0.3)
    fig.suptitle("Square, 1 s per item, batch 1: flat (root holds every link) vs --degree 10 tree "
                 "(real runs, and hollow: simulated, bench/tree_sim.py)", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / "paper-tree.png", dpi=120)
    plt.close(fig)  # type: ignore[attr-defined]
    log(f"wrote {RESULTS / 'paper-tree.csv'} and .png")
    return result


if __name__ == "__main__":
    main()
