"""Workload 1, overhead: a trivial function streamed through the root, beside the peers.

Pando: ``pando examples/square_fast.py --stdin --start-idle --batch-size B`` with
V native volunteers of one worker each; the volunteers have joined and their
workers are up before the first item is written to the root's stdin; the time
runs from that first write to the last output line read. Output is checked
byte for byte. Peers (bench/peers.py) run in the same loop, alternated, on the
same function and item count (GNU parallel on fewer items, a process per item).
"""
from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from typing import Any

from common import (BIN, EXAMPLES, PYTHON, BENCH, LineClock, Procs, Volunteer, cpu_seconds, free_port, log, ratio,
                    machine_cpu, stderr_collector, summary, table, fmt, wait_port, wait_rusage, wait_volunteers,
                    worker_pids)

MODULE = EXAMPLES / "square_fast.py"
PROFILE_FLAGS = ["--gil"]  # sample only the thread holding the GIL: where the root spends CPU


def items_bytes(count: int, start: int = 0) -> bytes:
    return "".join(f"{i}\n" for i in range(start, start + count)).encode()


def squares_digest(count: int, start: int = 0) -> str:
    return hashlib.sha1("".join(f"{i * i}\n" for i in range(start, start + count)).encode()).hexdigest()


def _feed(stdin: Any, data: bytes, close: bool = True) -> None:
    try:
        stdin.write(data)
        stdin.flush()
        if close:
            stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass


def run_pando(volunteers: int, batch: int | None, count: int, *, profile: str | None = None,
              profile_rate: int = 200, timeout: float = 600, args: tuple[str, ...] = ()) -> dict[str, Any]:
    """One pando run; ``batch`` None: the default (--batch-size auto); with ``profile`` (a path), py-spy
    records the root while items flow; ``args`` go to the root after the usual ones (bench/journal_cost.py
    adds --journal)."""
    procs = Procs()
    try:
        port = free_port()
        pinned = ("--batch-size", str(batch)) if batch is not None else ()
        root = procs.pando(MODULE, "--stdin", "--start-idle", *pinned, *args, port=port)
        err = stderr_collector(root)
        wait_port(port)
        vols = [procs.volunteer(port, 1, f"v{i}") for i in range(volunteers)]
        wait_volunteers(vols, 1, settle=0.3 + 0.05 * volunteers)
        run = stream(root, vols, count, profile=profile, profile_rate=profile_rate, timeout=timeout)
        return {"system": "pando", "volunteers": volunteers, "batch": batch, **run,
                "stderr_tail": [line for line in err if "Serving" not in line][-5:]}
    finally:
        procs.cleanup()


def stream(root: subprocess.Popen[bytes], vols: list[Volunteer], count: int, *, profile: str | None = None,
           profile_rate: int = 200, timeout: float = 600) -> dict[str, Any]:
    """Stream ``count`` items through a root whose volunteers have joined; the figures of the run.

    Time runs from the first item written to the last line read; CPU seconds are the root's and
    the volunteers' (with their workers) from the first item on; the output is checked whole.
    """
    data = items_bytes(count)
    clock = LineClock(root.stdout, keep=True)
    spy = None
    if profile:
        spy = subprocess.Popen([str(BIN / "py-spy"), "record", "--pid", str(root.pid), "--rate", str(profile_rate),
                                "--format", "raw", "--output", profile, "--threads", *PROFILE_FLAGS],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.5)  # py-spy attaches
    cpu_before = cpu_seconds(root.pid)
    vol_before = sum(cpu_seconds(pid) for v in vols for pid in [v.popen.pid, *worker_pids(v.popen.pid)])
    busy_before, total_before = machine_cpu()
    start = time.monotonic()
    threading.Thread(target=_feed, args=(root.stdin, data), daemon=True).start()
    cpu = wait_rusage(root, timeout)
    exited = time.monotonic()
    code = root.returncode
    busy_after, total_after = machine_cpu()
    clock.join(10)
    vol_cpu = [wait_rusage(v.popen, 15) for v in vols]
    vol_total = sum(vol_cpu) - vol_before if None not in vol_cpu else None  # type: ignore[operator]
    end = clock.last or time.monotonic()
    if spy is not None:
        try:
            spy.wait(30)  # py-spy stops and writes its file when the root exits
        except subprocess.TimeoutExpired:
            spy.kill()
    seconds = end - start
    exact = clock.count == count and hashlib.sha1(clock.text()).hexdigest() == squares_digest(count)
    return {"count": count, "seconds": seconds, "items_per_s": count / seconds, "exit": code, "exact": exact,
            "lines": clock.count, "timed_out": cpu is None, "root_exit_after_last_line_s": exited - end,
            "root_cpu_s": cpu, "root_cpu_before_s": cpu_before,
            "volunteers_cpu_s": vol_total,
            "machine_busy_share": (busy_after - busy_before) / max(1e-9, total_after - total_before)}


def run_peer(kind: str, workers: int, count: int, chunksize: int = 1024) -> dict[str, Any]:
    if kind == "parallel":
        return run_parallel(workers, count)
    args = [PYTHON, str(BENCH / "peers.py"), kind, "--workers", str(workers), "--count", str(count)]
    if kind == "pool":
        args += ["--chunksize", str(chunksize)]
    else:
        args += ["--scheduler-port", str(free_port())]
    procs = Procs()
    try:
        popen = procs.popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, errout = popen.communicate(timeout=900)
        lines = out.decode().strip().splitlines()
        if popen.returncode != 0 or not lines:
            return {"system": kind, "workers": workers, "count": count, "error": errout.decode()[-2000:]}
        import json

        result = json.loads(lines[-1])
        result["system"] = kind
        return result
    finally:
        procs.cleanup()


def run_parallel(workers: int, count: int) -> dict[str, Any]:
    """GNU parallel -k: a process per item, on fewer items; reports the cost per item too."""
    procs = Procs()
    try:
        args = ["parallel", "-k", "-j", str(workers), PYTHON, str(BENCH / "peers.py"), "one", "{}"]
        popen = procs.popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        start = time.monotonic()
        out, _ = popen.communicate(items_bytes(count), timeout=900)
        seconds = time.monotonic() - start
        exact = hashlib.sha1(out).hexdigest() == squares_digest(count)
        return {"system": "parallel", "workers": workers, "count": count, "seconds": seconds,
                "items_per_s": count / seconds, "ms_per_item": 1000 * seconds / count, "exact": exact,
                "exit": popen.returncode}
    finally:
        procs.cleanup()


def rotate(seq: list[Any], by: int) -> list[Any]:
    by %= len(seq) or 1
    return seq[by:] + seq[:by]


def run(params: dict[str, Any]) -> dict[str, Any]:
    """All configurations, alternated and repeated; medians and ratios."""
    volunteer_counts = params["volunteers"]
    batches = params["batches"]
    reps = params["reps"]
    runs: list[dict[str, Any]] = []
    for rep in range(reps):
        for workers in rotate(volunteer_counts, rep):
            systems: list[tuple[str, Any]] = [("pando", b) for b in batches]
            systems += [("pool", None)]
            if workers in params["dask_workers"]:
                systems += [("dask", None)]
            if workers in params["parallel_workers"]:
                systems += [("parallel", None)]
            for kind, batch in rotate(systems, rep):
                if kind == "pando":
                    count = params["count"] if batch > 1 else params["count_batch1"]
                    result = run_pando(workers, batch, count)
                elif kind == "pool":
                    result = run_peer("pool", workers, params["count"], params["pool_chunksize"])
                elif kind == "dask":
                    result = run_peer("dask", workers, params["dask_count"])
                else:
                    result = run_peer("parallel", workers, params["parallel_count"])
                result["rep"] = rep
                result.setdefault("workers", workers)
                runs.append(result)
                label = f"{kind}" + (f" b={batch}" if batch else "")
                log(f"overhead rep {rep} w={workers} {label}: {fmt(result.get('items_per_s'))} items/s"
                    f" exact={result.get('exact')}")
    return {"params": params, "runs": runs, "summary": summarize(runs, volunteer_counts, batches)}


def summarize(runs: list[dict[str, Any]], volunteer_counts: list[int], batches: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"pando": {}, "peers": {}, "ratios": {}}
    for workers in volunteer_counts:
        best = None
        for batch in batches:
            sel = [r for r in runs if r["system"] == "pando" and r["volunteers"] == workers and r["batch"] == batch]
            stats = summary(r["items_per_s"] for r in sel if r.get("exact"))
            stats["all_exact"] = all(r.get("exact") for r in sel)
            stats["root_cpu_share"] = summary(
                r["root_cpu_s"] - r["root_cpu_before_s"] for r in sel if r.get("root_cpu_s") is not None)
            out["pando"][f"{workers}x{batch}"] = stats
            if stats["median"] is not None and (best is None or stats["median"] > best[1]):
                best = (batch, stats["median"])
        for kind in ("pool", "dask", "parallel"):
            sel = [r for r in runs if r["system"] == kind and r["workers"] == workers and "items_per_s" in r]
            if sel:
                stats = summary(r["items_per_s"] for r in sel)
                stats["all_exact"] = all(r.get("exact") for r in sel)
                if kind == "parallel":
                    stats["ms_per_item"] = summary(r["ms_per_item"] for r in sel)["median"]
                out["peers"][f"{kind}:{workers}"] = stats
        if best:
            out["ratios"][str(workers)] = {
                "best_batch": best[0], "pando": best[1],
                **{f"pando/{kind}": ratio(best[1], out["peers"].get(f"{kind}:{workers}", {}).get("median"))
                   for kind in ("pool", "dask", "parallel")},
            }
    return out


def markdown(result: dict[str, Any], frames: dict[str, Any] | None = None) -> str:
    s = result["summary"]
    params = result["params"]
    batches = params["batches"]
    rows = []
    for workers in params["volunteers"]:
        row = [str(workers)]
        for batch in batches:
            st = s["pando"].get(f"{workers}x{batch}", {})
            row.append(fmt(st.get("median")) + ("" if st.get("all_exact", True) else " (NOT EXACT)"))
        for kind in ("pool", "dask", "parallel"):
            st = s["peers"].get(f"{kind}:{workers}")
            row.append(fmt(st["median"]) if st else "–")
        r = s["ratios"].get(str(workers), {})
        row += [f"{fmt(r.get('pando/pool'), 2)}", f"{fmt(r.get('pando/dask'), 1)}",
                f"{fmt(r.get('pando/parallel'), 0)}"]
        rows.append(row)
    header = (["volunteers / workers"] + [f"pando b={b}" for b in batches] + ["Pool.imap", "Dask", "GNU parallel"]
              + ["pando÷Pool", "pando÷Dask", "pando÷parallel"])
    text = [
        f"Items/s, median of {params['reps']} alternated run(s); pando {params['count']:,} items "
        f"({params['count_batch1']:,} at b=1), Pool.imap {params['count']:,} (chunksize {params['pool_chunksize']}), "
        f"Dask {params['dask_count']:,}, GNU parallel {params['parallel_count']:,}. Ratios use pando's best batch size.",
        "",
        table(header, rows),
    ]
    cpu_rows = []
    for key, st in s["pando"].items():
        cpu = st.get("root_cpu_share", {}).get("median")
        if cpu is not None and st.get("median"):
            workers, batch = key.split("x")
            count = params["count"] if int(batch) > 1 else params["count_batch1"]
            cpu_rows.append(f"{key}: {1e6 * cpu / count:.1f} µs")
    if cpu_rows:
        text += ["", "Root CPU time per item (user+sys of the pando process ÷ items): " + ", ".join(cpu_rows) + "."]
    par = [st.get("ms_per_item") for key, st in s["peers"].items() if key.startswith("parallel:")]
    if par and par[0]:
        text += ["", "GNU parallel cost per item (wall ÷ items): " + ", ".join(
            f"{key.split(':')[1]} jobs {st['ms_per_item']:.1f} ms" for key, st in s["peers"].items()
            if key.startswith("parallel:")) + "."]
    return "\n".join(text)
