"""Longest Collatz trajectory in a range of big integers (the paper's CPU workload).

An item is a JSON object {"start": "<integer>", "range": <count>}; the result
is the same object with "largest", the most steps any n in
[start, start + range) takes to reach 1. Python integers never overflow, so
start may have any number of digits. examples/collatz_ranges.py makes items.
"""
import json

import pando


def steps(n):
    count = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        count += 1
    return count


@pando.function
def longest(item):
    task = json.loads(item)
    start, size = int(task["start"]), int(task["range"])
    largest = max(steps(n) for n in range(start, start + size))
    return {"start": str(start), "range": size, "largest": largest}
