"""What users would pick instead of Pando, on the same function: one run, JSON on stdout.

    python bench/peers.py pool --workers N --count C [--chunksize K]
    python bench/peers.py dask --workers N --count C --scheduler-port P
    python bench/peers.py one ITEM          (one GNU parallel job: a process per item)

Every peer computes exactly what a Pando worker computes per item: parse the
item text, call the module's function (examples/square_fast.py, callback form),
format the result line (``pando.workers.compute``). Items are made in memory
and result lines are joined and checked against the expected squares; the time
is from handing over the first item to holding the last line, with the pool or
cluster already started and warmed up.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODULE = str(REPO / "examples" / "square_fast.py")

_fn = None


def square_line(text: str) -> str:
    """One item, as a Pando worker computes it."""
    global _fn
    if _fn is None:
        from pando import items
        from pando.module import load_file

        items.allow_big_integers()
        _fn = load_file(MODULE)[1]
    from pando.workers import compute

    answer = compute(_fn, 0, text)
    if answer[0] != "ok":
        raise RuntimeError(str(answer))
    return answer[2]


def expected_digest(count: int) -> str:
    return hashlib.sha1("".join(f"{i * i}\n" for i in range(count)).encode()).hexdigest()


def _finish(kind: str, workers: int, count: int, seconds: float, lines: list[str], **extra: object) -> None:
    digest = hashlib.sha1(("\n".join(lines) + "\n").encode()).hexdigest()
    print(json.dumps({"peer": kind, "workers": workers, "count": count, "seconds": seconds,
                      "items_per_s": count / seconds, "exact": digest == expected_digest(count), **extra}))


def run_pool(workers: int, count: int, chunksize: int) -> None:
    texts = [str(i) for i in range(count)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        list(pool.imap(square_line, [str(i) for i in range(workers * 4)], chunksize=1))  # warm every worker
        start = time.perf_counter()
        lines = list(pool.imap(square_line, texts, chunksize=chunksize))
        sys.stdout.flush()
        seconds = time.perf_counter() - start
    _finish("pool", workers, count, seconds, lines, chunksize=chunksize)


def run_dask(workers: int, count: int, scheduler_port: int) -> None:
    import logging

    from dask.distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    base = 19200 + (scheduler_port % 10) * 60  # worker and nanny ports stay in 19200-19799
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=scheduler_port,
        dashboard_address=None, worker_port=f"{base}:{base + 29}", port=f"{base + 30}:{base + 59}",
        silence_logs=logging.ERROR,
    )
    with cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        client.gather(client.map(square_line, [f"-{i}" for i in range(1, workers * 4)]))  # warm up
        texts = [str(i) for i in range(count)]
        start = time.perf_counter()
        futures = client.map(square_line, texts)
        lines = client.gather(futures)  # in input order
        seconds = time.perf_counter() - start
        del futures
    _finish("dask", workers, count, seconds, lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("peer", choices=["pool", "dask", "one"])
    parser.add_argument("item", nargs="?")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--chunksize", type=int, default=64)
    parser.add_argument("--scheduler-port", type=int, default=19190)
    args = parser.parse_args()
    if args.peer == "one":
        print(square_line(args.item))
    elif args.peer == "pool":
        run_pool(args.workers, args.count, args.chunksize)
    else:
        run_dask(args.workers, args.count, args.scheduler_port)


if __name__ == "__main__":
    main()
