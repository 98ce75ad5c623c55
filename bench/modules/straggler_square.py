"""Square a number after a fixed sleep; one volunteer can be made slow, or freeze, through its environment.

For bench/stragglers.py. The module runs in each volunteer's worker processes,
which inherit the volunteer's environment, so the benchmark picks the one
misbehaving volunteer by starting it with different variables:

- ``PANDO_BENCH_DELAY``: seconds each item sleeps (default 0.03);
- ``PANDO_BENCH_SLOW``: a factor on that delay (10 = ten times slower);
- ``PANDO_BENCH_FREEZE_AT``: the N-th item this worker computes sleeps an hour
  instead: the worker hangs while its volunteer keeps heartbeating, which is
  exactly what only a straggler copy can rescue.

Time is slept, not burnt, so a few volunteers fit on two cores without
competing for them: the item time stays what the benchmark says it is.
"""
import os
import time

import pando

_DELAY = float(os.environ.get("PANDO_BENCH_DELAY", "0.03")) * float(os.environ.get("PANDO_BENCH_SLOW", "1"))
_FREEZE_AT = int(os.environ.get("PANDO_BENCH_FREEZE_AT", "0"))  # 0: never
_done = 0  # items this worker process started


@pando.function
def square(x):
    global _done
    _done += 1
    time.sleep(3600 if _done == _FREEZE_AT else _DELAY)
    return x * x
