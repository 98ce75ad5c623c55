#!/usr/bin/env python3
"""Print Collatz range items for examples/collatz.py, one JSON object per line.

Usage: collatz_ranges.py [COUNT] [RANGE] [START]
Defaults: 100 ranges of 175 integers from 3179389980591125407167, like the paper.
"""
import json
import sys


def main(argv):
    count = int(argv[1]) if len(argv) > 1 else 100
    size = int(argv[2]) if len(argv) > 2 else 175
    start = int(argv[3]) if len(argv) > 3 else 3179389980591125407167
    for index in range(count):
        print(json.dumps({"start": str(start + index * size), "range": size}))


if __name__ == "__main__":
    main(sys.argv)
