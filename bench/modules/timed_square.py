"""Square a number after sleeping the seconds its item says: ``"X T"`` → ``X * X`` after ``T`` s.

For bench/batching.py: slow items, and items whose times vary by 1000×, with
the ideal run time known in advance (the sum of the times over the workers).
Time is slept, not burnt, so several volunteers fit on two cores without
competing for them.
"""
import time

import pando


@pando.function
def square(item):
    x, seconds = item.split()
    time.sleep(float(seconds))
    return int(x) * int(x)
