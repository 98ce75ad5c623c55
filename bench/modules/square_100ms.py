"""Square a number in 0.1 s: the short-task variant of examples/square.py (bench/scaling.py)."""
import time

import pando


@pando.function
def square(x):
    time.sleep(0.1)
    return x * x
