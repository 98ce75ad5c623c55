"""Square a number after PANDO_BENCH_DELAY seconds (default 0.05), logging when each item starts and ends.

For bench/churn.py: with PANDO_BENCH_TRACE set to a file, each call appends
``s|e VALUE PGID MONOTONIC`` lines (O_APPEND, one write each), so the benchmark
can tell which volunteer (process group) was computing what when it was killed,
and when another one started the same item again. CLOCK_MONOTONIC is shared by
every process on Linux.
"""
import os
import time

import pando

_DELAY = float(os.environ.get("PANDO_BENCH_DELAY", "0.05"))
_TRACE = os.environ.get("PANDO_BENCH_TRACE")
_FD = os.open(_TRACE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if _TRACE else None


def _note(kind, x):
    if _FD is not None:
        os.write(_FD, f"{kind} {x} {os.getpgid(0)} {time.monotonic():.6f}\n".encode())


@pando.function
def square(x):
    _note("s", x)
    time.sleep(_DELAY)
    _note("e", x)
    return x * x
