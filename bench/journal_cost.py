"""Workload 9, the cost of ``--journal FILE``: the overhead workload with and without a journal.

``examples/square_fast.py`` (no work per item: what is left is Pando's own
cost, where a journal shows most) through ``pando --stdin --start-idle
--batch-size B`` with V one-worker native volunteers, exactly as in
bench/overhead.py (whose ``run_pando`` does the run), once plain and once with
``--journal`` on a fresh file in a temporary folder under /tmp (the same disk
as everything else the benchmarks write). The two run back to back in each
repetition, their order swapped every other one; cost = with ÷ without - 1,
from the medians and per pair (the verdict uses the median per pair). The
journal must hold a line per item afterwards: a run whose journal is short is
reported, since it measured nothing.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from common import fmt, log, ratio, summary, table
from overhead import run_pando


def run_one(volunteers: int, batch: int, count: int, journal: bool) -> dict[str, Any]:
    """One overhead run, with a journal in a folder of its own (removed afterwards) or without."""
    folder = Path(tempfile.mkdtemp(prefix="pando-bench-journal-"))
    try:
        path = folder / "journal.txt"
        result = run_pando(volunteers, batch, count, args=("--journal", str(path)) if journal else ())
        result["journal"] = journal
        if journal:
            # Counted as text lines: a journal format with a header line would show as count + 1.
            result["journal_lines"] = path.read_bytes().count(b"\n") if path.exists() else None
            result["journal_bytes"] = path.stat().st_size if path.exists() else None
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(params: dict[str, Any]) -> dict[str, Any]:
    """Each batch size with and without the journal, paired, alternated, repeated."""
    runs: list[dict[str, Any]] = []
    for rep in range(params["reps"]):
        for batch in params["batches"]:
            count = params["count"] if batch > 1 else params["count_batch1"]
            for journal in ((False, True) if rep % 2 == 0 else (True, False)):
                result = run_one(params["volunteers"], batch, count, journal)
                result["rep"] = rep
                runs.append(result)
                log(f"journal rep {rep} b={batch} journal={journal}: {fmt(result['items_per_s'])} items/s, "
                    f"exact={result['exact']}, journal lines {result.get('journal_lines', '–')}")
    return {"params": params, "runs": runs, "summary": summarize(runs, params)}


def summarize(runs: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"by_batch": {}}
    for batch in params["batches"]:
        plain = [r for r in runs if r["batch"] == batch and not r["journal"]]
        logged = [r for r in runs if r["batch"] == batch and r["journal"]]
        without, with_ = (summary(r["seconds"] for r in sel if r["exact"]) for sel in (plain, logged))
        # Paired by repetition: the two runs of a pair ran back to back, under the same load.
        pairs = {r["rep"]: r["seconds"] for r in plain}
        per_rep = [r["seconds"] / pairs[r["rep"]] - 1 for r in logged if r["rep"] in pairs]
        cpu = {journal: summary((r["root_cpu_s"] - r["root_cpu_before_s"]) / r["count"] for r in sel
                                if r.get("root_cpu_s") is not None)["median"]
               for journal, sel in ((False, plain), (True, logged))}
        slowdown = ratio(with_["median"], without["median"])
        out["by_batch"][str(batch)] = {
            "count": plain[0]["count"] if plain else None,
            "seconds_without": without, "seconds_with": with_,
            "items_per_s_without": ratio(plain[0]["count"], without["median"]) if plain else None,
            "items_per_s_with": ratio(logged[0]["count"], with_["median"]) if logged else None,
            "cost": slowdown - 1 if slowdown is not None else None,
            "cost_per_rep": summary(per_rep),
            "root_cpu_per_item_s": {"without": cpu[False], "with": cpu[True]},
            "all_exact": all(r["exact"] for r in plain + logged),
            "journal_complete": all(r.get("journal_lines") is not None and r["journal_lines"] >= r["count"]
                                    for r in logged),
        }
    # "At the best batch size": the one where Pando without a journal is fastest, as in the overhead table.
    rated = [(st["items_per_s_without"] or 0, batch) for batch, st in out["by_batch"].items()]
    out["best_batch"] = max(rated)[1] if rated else None
    return out


def markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    s = result["summary"]
    rows = []
    for batch, st in s["by_batch"].items():
        cpu = st["root_cpu_per_item_s"]
        per_rep = st["cost_per_rep"]
        rows.append([batch, f"{st['count']:,}", fmt(st["items_per_s_without"]), fmt(st["items_per_s_with"]),
                     "–" if st["cost"] is None else f"{100 * st['cost']:+.1f}%",
                     "–" if per_rep["median"] is None else
                     f"{100 * per_rep['median']:+.1f}% ({100 * per_rep['min']:+.1f}% … {100 * per_rep['max']:+.1f}%)",
                     "–" if cpu["without"] is None else f"{1e6 * cpu['without']:.1f}",
                     "–" if cpu["with"] is None else f"{1e6 * cpu['with']:.1f}",
                     "yes" if st["all_exact"] else "NO", "yes" if st["journal_complete"] else "NO"])
    best = s["by_batch"].get(str(s["best_batch"]), {})
    # The verdict uses the paired cost: each pair ran back to back, so slow drifts of a shared machine
    # mostly cancel, where the ratio of medians may pair a quiet minute with a busy one.
    cost = best.get("cost_per_rep", {}).get("median")
    verdict = "–" if cost is None else ("met" if cost < 0.05 else "NOT met")
    return "\n".join([
        f"`examples/square_fast.py`, {p['volunteers']} one-worker volunteers, with and without `--journal FILE` "
        f"(a fresh file under /tmp), median of {p['reps']} paired run(s), order swapped every other repetition. "
        "Cost = seconds with ÷ seconds without - 1.",
        "",
        table(["batch", "items", "items/s without", "items/s with", "cost (medians)", "cost per pair: median (range)",
               "root CPU µs/item without", "with", "exact", "journal has every item"], rows),
        "",
        f"Goal: < 5% at the best batch size (b={s['best_batch']}), median cost per pair: "
        f"{'–' if cost is None else f'{100 * cost:+.1f}%'}, {verdict}.",
    ])
