"""Where the root's time goes: py-spy samples of the pando process during the overhead workload.

    python bench/profile_root.py [--volunteers 4] [--batch 64 8 1] [--count N] [--out DIR]

py-spy samples the root with ``--gil`` (only the thread holding the GIL, i.e.
the Python work that uses a CPU) and ``--threads``; the raw collapsed stacks
are kept in DIR (one file per configuration, loadable by speedscope or
flamegraph.pl) and summarised: share of samples per thread role, per
function (self), per pando/websockets function (inclusive) and per category.
Sampling slows the root down (blocking samples), so the profiled runs' items/s
are not the benchmark's figures.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import overhead
from common import RESULTS, log, table

_THREAD = re.compile(r"thread \((\d+)\): ?(.*)")
_FRAME = re.compile(r"(.*) \((.*?):(\d+)\)$")


def role(thread: str) -> str:
    """A thread's job, from its name: websockets' threads get the name of their function."""
    if m := re.search(r"\((\w+)\)$", thread):
        return {"recv_events": "websockets recv_events (socket reader, one per connection)",
                "sock_handler": "session reader (Session.serve, one per connection)",
                "keepalive": "websockets keepalive"}.get(m.group(1), m.group(1))
    return {"session-sender": "session sender (one per connection)"}.get(thread, thread or "?")


def category(frames: list[str]) -> str:
    """A coarse label for a stack by its innermost recognisable frame."""
    text = ";".join(frames)
    leaf = frames[-1] if frames else ""
    if "json/" in leaf or "encoder.py" in leaf or "decoder.py" in leaf or "protocol.py" in text.split(";")[-1] \
            and ("encode" in leaf or "decode" in leaf):
        return "JSON encode/decode"
    for needle, label in (
        ("socket.py", "socket send/recv"), ("sendall", "socket send/recv"), ("recv_into", "socket send/recv"),
        ("selectors.py", "select/epoll"),
        ("threading.py", "locks, conditions, queues (thread hand-offs)"), ("queue.py", "locks, conditions, queues (thread hand-offs)"),
    ):
        if needle in leaf:
            return label
    if "websockets/" in leaf:
        return "websockets framing and bookkeeping"
    if "pando/protocol.py" in leaf:
        return "pando.protocol (checks, pack)"
    if "pando/lender.py" in leaf:
        return "pando.lender"
    if "pando/reorder.py" in leaf:
        return "pando.reorder"
    if "pando/reader.py" in leaf:
        return "pando.reader"
    if "pando/" in leaf:
        return "other pando code"
    return "other (interpreter, stdlib)"


def parse(path: Path) -> list[tuple[str, list[str], int]]:
    """(thread name, frames outermost first, samples) per line of py-spy's raw output."""
    stacks = []
    for line in path.read_text().splitlines():
        body, _, count = line.rpartition(" ")
        parts = body.split(";")
        match = _THREAD.match(parts[0])
        thread = match.group(2).strip() if match else ""
        frames = parts[1:] if match else parts
        stacks.append((thread, frames, int(count)))
    return stacks


def short(frame: str) -> str:
    if m := _FRAME.match(frame):
        name, file, lineno = m.groups()
        file = file.split("site-packages/")[-1]
        return f"{name} ({file})"
    return frame


def analyse(path: Path, top: int = 15) -> dict[str, Any]:
    stacks = parse(path)
    total = sum(count for _, frames, count in stacks if frames)
    empty = sum(count for _, frames, count in stacks if not frames)
    by_role: Counter[str] = Counter()
    by_self: Counter[str] = Counter()
    by_incl: Counter[str] = Counter()
    by_cat: Counter[str] = Counter()
    for thread, frames, count in stacks:
        if not frames:
            continue
        by_role[role(thread)] += count
        by_self[short(frames[-1])] += count
        by_cat[category(frames)] += count
        seen = set()
        for frame in frames:
            name = short(frame)
            if ("pando/" in frame or "websockets/" in frame or "json" in frame) and name not in seen:
                seen.add(name)
                by_incl[name] += count

    def pct(counter: Counter[str], n: int = top) -> list[tuple[str, float, int]]:
        return [(k, 100 * v / total, v) for k, v in counter.most_common(n)]

    return {"file": str(path), "samples": total, "samples_without_stack": empty, "by_thread": pct(by_role),
            "by_category": pct(by_cat), "self": pct(by_self), "inclusive": pct(by_incl, 25)}


def markdown(name: str, result: dict[str, Any], run: dict[str, Any] | None = None) -> str:
    lines = [f"#### {name}", ""]
    if run:
        lines.append(f"Profiled run: {run['count']:,} items, {run['items_per_s']:,.0f} items/s under the profiler "
                     f"(exact: {run['exact']}); root CPU {run['root_cpu_s'] - run['root_cpu_before_s']:.2f} s; "
                     f"{result['samples']} GIL-holding samples.")
        lines.append("")
    for key, title in (("by_thread", "thread role"), ("by_category", "category (innermost frame)"),
                       ("self", "function (self)"), ("inclusive", "pando / websockets / json function (inclusive)")):
        rows = [[k, f"{p:.1f}%"] for k, p, _ in result[key][: 12 if key != "inclusive" else 20]]
        lines += [table([title, "% of samples"], rows), ""]
    return "\n".join(lines)


def run(volunteers: int, batches: list[int], counts: dict[int, int], out: Path, rate: int = 500) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for batch in batches:
        path = out / f"root-{volunteers}x{batch}.pyspy.txt"
        log(f"profiling the root: {volunteers} volunteers, batch {batch}")
        run_result = overhead.run_pando(volunteers, batch, counts.get(batch, counts[0]), profile=str(path),
                                        profile_rate=rate)
        analysis = analyse(path)
        results[f"{volunteers}x{batch}"] = {"run": run_result, "analysis": analysis}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volunteers", type=int, default=4)
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 8, 1])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "profiles")
    parser.add_argument("--analyse", type=Path, nargs="*", help="only summarise existing raw files")
    args = parser.parse_args()
    if args.analyse:
        for path in args.analyse:
            print(markdown(path.name, analyse(path)))
        return
    counts = {0: args.count, 1: min(args.count, 10_000), 8: min(args.count, 100_000)}
    results = run(args.volunteers, args.batch, counts, args.out)
    text = "\n".join(markdown(f"root, {key}", r["analysis"], r["run"]) for key, r in results.items())
    (args.out / "profile.md").write_text(text)
    (args.out / "profile.json").write_text(json.dumps(results, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
