"""Workload 5, memory: many items through ``test/count N | pando ... --stdin | test/measure-throughput``.

The root computes examples/square_fast.py with V native volunteers; its RSS
(VmRSS from /proc) is sampled every ``sample_s`` seconds while the items flow,
and its peak (VmHWM) read at the end. Flat means: after the first tenth of the
items, RSS does not keep growing with the item count (the window bounds what
the root holds). test/measure-throughput's JSON lines give the output rate over
time and the final count, which must equal N.
"""
from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from common import (EXAMPLES, REPO, PYTHON, Procs, free_port, log, rss_kib, stderr_collector, table, fmt,
                    wait_port, wait_volunteers)


def run(params: dict[str, Any]) -> dict[str, Any]:
    count, volunteers, batch = params["count"], params["volunteers"], params["batch"]
    procs = Procs()
    try:
        port = free_port()
        root = procs.pando(EXAMPLES / "square_fast.py", "--stdin", "--start-idle", "--batch-size", str(batch),
                           port=port)
        err = stderr_collector(root)
        wait_port(port)
        vols = [procs.volunteer(port, 1, f"m{i}") for i in range(volunteers)]
        wait_volunteers(vols, 1)
        meter = procs.popen([PYTHON, str(REPO / "test" / "measure-throughput"), str(params["interval_ms"])],
                            stdin=root.stdout, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        root.stdout.close()  # the meter holds it now
        samples: list[tuple[float, int]] = []
        start = time.monotonic()
        counter = procs.popen([PYTHON, str(REPO / "test" / "count"), "0", str(count)], stdout=root.stdin,
                              stderr=subprocess.DEVNULL)
        root.stdin.close()
        while root.poll() is None:
            rss, hwm = rss_kib(root.pid)
            if rss:
                samples.append((time.monotonic() - start, rss))
            time.sleep(params["sample_s"])
        _, hwm = 0, max((rss for _, rss in samples), default=0)
        out, _ = meter.communicate(timeout=60)
        counter.wait(10)
        seconds = time.monotonic() - start
        rates = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        final = rates[-1] if rates else {}
        duration = samples[-1][0] if samples else 0
        after = [rss for t, rss in samples if t >= 0.1 * duration]
        first_half = [rss for t, rss in samples if 0.1 * duration <= t < 0.55 * duration]
        second_half = [rss for t, rss in samples if t >= 0.55 * duration]
        growth = (max(second_half) - max(first_half)) / 1024 if first_half and second_half else None
        result = {
            "params": params, "exit": root.returncode, "seconds": seconds, "lines": final.get("count"),
            "complete": final.get("count") == count, "items_per_s": final.get("average"),
            "rss_samples": [(round(t, 2), kib) for t, kib in samples],
            "rss_start_mib": samples[0][1] / 1024 if samples else None,
            "rss_after_warmup_mib": min(after) / 1024 if after else None,
            "rss_peak_sampled_mib": hwm / 1024,
            "rss_growth_second_half_mib": growth,
            "throughput_lines": rates,
            "stderr_tail": [line for line in err if "Serving" not in line and "Monitoring" not in line][-5:],
        }
        result["flat"] = growth is not None and growth < max(5.0, 0.1 * (result["rss_after_warmup_mib"] or 0))
        log(f"memory: {count:,} items in {seconds:.1f} s, RSS after warm-up {fmt(result['rss_after_warmup_mib'], 1)}"
            f" MiB, peak {fmt(result['rss_peak_sampled_mib'], 1)} MiB, growth in 2nd half "
            f"{fmt(growth, 1)} MiB, complete={result['complete']}")
        return result
    finally:
        procs.cleanup()


def markdown(result: dict[str, Any]) -> str:
    p = result["params"]
    return (f"`test/count 0 {p['count']:,} | pando examples/square_fast.py --stdin --start-idle --batch-size "
            f"{p['batch']}` with {p['volunteers']} volunteers, `| test/measure-throughput {p['interval_ms']}`: "
            f"{fmt(result['seconds'], 1)} s, {fmt(result['items_per_s'])} items/s, all lines: "
            f"{'yes' if result['complete'] else 'NO'}.\n\n"
            + table(["root RSS at start", "after warm-up (min)", "peak (sampled)", "growth, 2nd half vs 1st", "flat"],
                    [[fmt(result["rss_start_mib"], 1) + " MiB", fmt(result["rss_after_warmup_mib"], 1) + " MiB",
                      fmt(result["rss_peak_sampled_mib"], 1) + " MiB",
                      fmt(result["rss_growth_second_half_mib"], 1) + " MiB", "yes" if result["flat"] else "NO"]]))
