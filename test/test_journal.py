"""--journal and --resume: the journal's file, resuming after a complete run and after SIGKILLs, refusals.

Runs are real ``pando`` processes (with the root's own helper computing, or
--local); the module counts its computations by appending to a file, so a test
can tell what was computed again. The journal module alone is property-tested.
"""
from __future__ import annotations

import hashlib
import os
import random
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import EXAMPLES, KeptOutput, Processes, RootProcess, lines
from pando import journal, status
from pando.journal import HEADER, Entry, Journal, JournalError
from pando.reorder import Reorder
from pando.window import Window

pytestmark = pytest.mark.timeout(60)

# Counts each computation in $COUNT_FILE (O_APPEND: whole lines even from several processes),
# after an optional $SLEEP; the result holds a tab, as results may.
COUNTING = """\
import os
import time

import pando


@pando.function
def tagged(x):
    if os.environ.get("FAIL_AT") == str(x):
        raise ValueError(f"no {x} here")
    time.sleep(float(os.environ.get("SLEEP", "0")))
    fd = os.open(os.environ["COUNT_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{x}\\n".encode())
    finally:
        os.close(fd)
    return f"{x}\\t{type(x).__name__}"
"""

MODES = {"root": [], "local": ["--local"]}


def expected(values: list[str]) -> bytes:
    """What an uninterrupted run of COUNTING prints for these input lines."""
    def kind(text: str) -> str:
        try:
            int(text)
            return "int"
        except ValueError:
            return "str"
    return "".join(f"{text}\t{kind(text)}\n" for text in values).encode()


class Run:
    """One test's module, journal and count file."""

    def __init__(self, procs: Processes) -> None:
        self.procs = procs
        self.module = procs.tmp / "counting.py"
        self.module.write_text(COUNTING)
        self.journal = procs.tmp / "results.journal"
        self.count_file = procs.tmp / "count"

    def start(self, values: list[str], *options: str, **env: str) -> RootProcess:
        return self.procs.pando(str(self.module), "--stdin", "--journal", str(self.journal), *options,
                                stdin="".join(f"{value}\n" for value in values).encode(),
                                COUNT_FILE=str(self.count_file), **env)

    def computed(self) -> list[str]:
        """Every computation so far, in the order they happened."""
        return self.count_file.read_text().splitlines() if self.count_file.exists() else []

    def entries(self) -> int:
        """Complete entries in the journal now."""
        try:
            data = self.journal.read_bytes()
        except FileNotFoundError:
            return 0
        return max(0, data.count(b"\n") - 1)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- a normal run ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_every_written_result_is_in_the_journal(procs: Processes, mode: str) -> None:
    run = Run(procs)
    values = ["1", "-7", "a\tb", "", "é", *map(str, range(10, 40))]
    root = run.start(values, *MODES[mode])
    assert root.wait() == 0, root.err
    assert root.out == expected(values)
    text = run.journal.read_text("utf-8")
    assert text.startswith("# pando journal 1:")
    header, *entries = text.splitlines()
    assert (header + "\n").encode() == HEADER
    assert entries == [f"{n}\t{digest(value)}\t{line}"
                       for n, (value, line) in enumerate(zip(values, root.out.decode().splitlines()), 1)]
    assert journal.read(str(run.journal)) == [
        Entry(n, digest(value), line) for n, (value, line) in enumerate(zip(values, root.out.decode().splitlines()))
    ]


@pytest.mark.parametrize("mode", MODES)
def test_the_journal_is_never_behind_stdout(procs: Processes, mode: str) -> None:
    # The journal is fsynced before stdout is written: whenever stdout has k lines, the journal
    # has at least k entries. Reading stdout first, then the journal, checks that while the run goes.
    run = Run(procs)
    values = [str(n) for n in range(300)]
    root = run.start(values, *MODES[mode], SLEEP="0.003")
    samples = 0
    while root.popen.poll() is None:
        written = root.out.count(b"\n")
        assert run.entries() >= written
        samples += written > 0
        time.sleep(0.002)
    assert root.wait() == 0, root.err
    assert root.out == expected(values) and run.entries() == len(values)
    assert samples > 10  # it was watched while it wrote, not only at the end


def test_failed_items_are_not_journaled(procs: Processes) -> None:
    run = Run(procs)
    values = [str(n) for n in range(1, 21)]
    # One item at a time (one worker, batch 1): nothing past 13 computed.
    failing = run.start(values, "--workers", "1", "--batch-size", "1", FAIL_AT="13")
    assert failing.wait() == 1
    assert "item 13 (value '13') failed" in failing.err
    assert [entry.result for entry in journal.read(str(run.journal))] == expected(values[:12]).decode().splitlines()
    # Once the function is fixed, the run resumes where it failed.
    fixed = run.start(values, "--resume", "--workers", "1", "--batch-size", "1")
    assert fixed.wait() == 0, fixed.err
    assert fixed.out == expected(values)
    assert run.computed() == values  # 1 to 12 the first time (13 failed before it counted), the rest now


# -- resuming ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_resume_after_a_complete_run_computes_nothing(procs: Processes, mode: str) -> None:
    run = Run(procs)
    values = [str(n) for n in range(100)]
    first = run.start(values, *MODES[mode])
    assert first.wait() == 0, first.err
    journal_bytes = run.journal.read_bytes()
    assert len(run.computed()) == len(values)
    again = run.start(values, *MODES[mode], "--resume")
    assert again.wait() == 0, again.err
    assert again.out == first.out == expected(values)
    assert len(run.computed()) == len(values)  # nothing computed again
    assert run.journal.read_bytes() == journal_bytes  # and nothing journaled twice


@pytest.mark.parametrize("mode", MODES)
def test_resume_computes_only_the_new_items_and_journals_them(procs: Processes, mode: str) -> None:
    run = Run(procs)
    values = [str(n) for n in range(50)]
    assert run.start(values[:30], *MODES[mode]).wait() == 0
    longer = run.start(values, *MODES[mode], "--resume")
    assert longer.wait() == 0, longer.err
    assert longer.out == expected(values)
    assert Counter(run.computed()) == Counter(values)  # each once (in any order: the root has a worker per core)
    assert [entry.id for entry in journal.read(str(run.journal))] == list(range(50))


def test_resume_with_no_journal_yet_starts_one(procs: Processes) -> None:
    run = Run(procs)
    root = run.start(["1", "2"], "--local", "--resume")
    assert root.wait() == 0, root.err
    assert root.out == expected(["1", "2"]) and run.entries() == 2


@pytest.mark.parametrize("mode", MODES)
def test_a_truncated_last_line_is_ignored_and_replaced(procs: Processes, mode: str) -> None:
    run = Run(procs)
    values = [str(n) for n in range(10)]
    assert run.start(values, *MODES[mode]).wait() == 0
    complete = run.journal.read_bytes()
    run.journal.write_bytes(complete[:-4])  # killed while writing the last entry
    resumed = run.start(values, *MODES[mode], "--resume")
    assert resumed.wait() == 0, resumed.err
    assert resumed.out == expected(values)
    assert Counter(run.computed()) == Counter(values + ["9"])  # again only the item whose entry was cut
    assert run.journal.read_bytes() == complete


@pytest.mark.parametrize("mode", MODES)
def test_an_input_error_among_the_journaled_items_comes_after_their_results(procs: Processes, mode: str) -> None:
    run = Run(procs)
    assert run.start(["1", "2", "3", "4"], *MODES[mode]).wait() == 0
    root = procs.pando(str(run.module), "--stdin", "--journal", str(run.journal), "--resume", *MODES[mode],
                       stdin=b"1\n2\n\xff\n4\n", COUNT_FILE=str(run.count_file))
    assert root.wait() == 3
    assert root.out == expected(["1", "2"]) and "line 3 is not valid UTF-8" in root.err
    assert len(run.computed()) == 4


# Items: 2000 at 2 ms each, computed by the root's own helper (one worker) with --batch-size 4.
KILL_ITEMS = 2000
KILL_BATCH = 4
KILLS = 5
# What one kill may cost again: the items lent and not yet journaled. The helper holds at most
# workers × batch = 4 items (computed or not; a killed root's helper may even finish them before
# it notices). Results the root accepted but had not fsynced yet belong to the reorder thread's
# current group: at most GROUP_SECONDS (10 ms) plus an fsync's worth of results, 5 to 10 items at
# 2 ms each. One worker answers in input order, so no result waits in the reorder buffer for an
# earlier one. The slack covers that group, with room for a slow fsync.
KILL_SLACK = 16


def test_sigkill_at_random_moments_then_resume(procs: Processes) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    run = Run(procs)
    values = [str(n) for n in range(KILL_ITEMS)]
    kills: list[int] = []  # entries in the journal after each kill
    while True:
        before = run.entries()
        # One worker, as the bound below assumes (the helper would run one per core).
        root = run.start(values, "--resume", "--batch-size", str(KILL_BATCH), "--workers", "1", SLEEP="0.002")
        if len(kills) < KILLS:
            # Once this run has journaled something of its own, kill it at a random moment.
            deadline = time.monotonic() + 20
            while run.entries() <= before and root.popen.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 1.2))
            if root.popen.poll() is None:
                os.kill(root.popen.pid, signal.SIGKILL)
                root.wait()
                kills.append(run.entries())
                continue
        assert root.wait() == 0, f"seed {seed}: {root.err}"
        break
    assert root.out == expected(values), f"seed {seed}"
    computed = run.computed()
    assert sorted(set(computed), key=int) == values
    again = len(computed) - len(values)
    assert again <= len(kills) * (KILL_BATCH + KILL_SLACK), f"seed {seed}: {again} again after kills at {kills}"
    assert len(kills) >= 2, f"seed {seed}: the run ended before it was killed often enough"


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_other_input_is_refused_before_anything_is_written(procs: Processes, mode: str) -> None:
    run = Run(procs)
    values = [str(n) for n in range(1, 11)]
    assert run.start(values, *MODES[mode]).wait() == 0
    journal_bytes = run.journal.read_bytes()
    changed = values[:4] + ["99"] + values[5:]
    root = run.start(changed, *MODES[mode], "--resume")
    assert root.wait() == 2
    assert "results.journal was written for other input (item 5 differs" in root.err
    assert root.out == b"" and "Serving" not in root.err
    shorter = run.start(values[:6], *MODES[mode], "--resume")
    assert shorter.wait() == 2
    assert "was written for other input" in shorter.err and shorter.out == b""
    assert len(run.computed()) == 10 and run.journal.read_bytes() == journal_bytes


def test_resume_without_a_journal_is_a_usage_error(procs: Processes) -> None:
    root = procs.pando(str(EXAMPLES / "square_fast.py"), "--resume", "1", "2")
    assert root.wait() == 2
    assert "--resume needs --journal" in root.err and root.out == b""


@pytest.mark.parametrize("mode", MODES)
def test_a_journal_with_results_is_never_overwritten(procs: Processes, mode: str) -> None:
    run = Run(procs)
    assert run.start(["1", "2"], *MODES[mode]).wait() == 0
    journal_bytes = run.journal.read_bytes()
    root = run.start(["1", "2"], *MODES[mode])
    assert root.wait() == 2
    assert "already holds results: pass --resume" in root.err and root.out == b""
    assert run.journal.read_bytes() == journal_bytes


@pytest.mark.parametrize("resume", [[], ["--resume"]])
def test_a_file_that_is_not_a_journal_is_left_alone(procs: Processes, resume: list[str]) -> None:
    run = Run(procs)
    run.journal.write_text("precious notes\n")
    root = run.start(["1"], "--local", *resume)
    assert root.wait() == 2
    assert "is not a pando journal" in root.err and root.out == b""
    assert run.journal.read_text() == "precious notes\n"


def test_one_journal_serves_one_run_at_a_time(procs: Processes) -> None:
    run = Run(procs)
    first = run.start([str(n) for n in range(200)], SLEEP="0.05")
    first.port  # serving: it holds the journal
    second = run.start(["1"], "--local", "--resume")
    assert second.wait() == 2
    assert "is in use by another pando run" in second.err and second.out == b""


# -- the journal module alone --------------------------------------------------------------------

entry_results = st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=12)
entry_lists = st.lists(
    st.builds(Entry, st.integers(0, 10**12), st.text("0123456789abcdef", min_size=16, max_size=16), entry_results),
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(entries=entry_lists, cuts=st.lists(st.integers(0, 20), max_size=4), data=st.data())
def test_entries_read_back_and_truncations_give_a_prefix(entries: list[Entry], cuts: list[int],
                                                         data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "j")
        with Journal.open(path, resume=False) as written:
            start = 0
            for cut in sorted(cuts) + [len(entries)]:  # in groups, as the reorder thread writes them
                written.write(entries[start:max(start, cut)])
                start = max(start, cut)
        assert journal.read(path) == entries
        whole = Path(path).read_bytes()
        size = data.draw(st.integers(0, len(whole)), label="truncated to")
        Path(path).write_bytes(whole[:size])
        prefix = journal.read(path)
        assert prefix == entries[:len(prefix)]
        assert len(prefix) == max(0, whole[:size].count(b"\n") - 1)  # every complete line counts


def test_damaged_lines_and_other_formats_are_named() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "j")
        Path(path).write_bytes(HEADER + b"1\t0123456789abcdef\tok\n2\tnot-a-digest\tx\n")
        with pytest.raises(JournalError, match="damaged at line 3"):
            journal.read(path)
        Path(path).write_bytes(b"# pando journal 7: from the future\n")
        with pytest.raises(JournalError, match="format '7'"):
            Journal.open(path, resume=True)


def test_the_reorder_thread_journals_each_group_before_writing_it(tmp_path: Path) -> None:
    out = KeptOutput()
    window = Window(100, 1 << 20)
    window.take(4, 4)
    groups: list[tuple[int, list[int]]] = []  # (lines on stdout, ids journaled) at each journal write
    with Journal.open(str(tmp_path / "j"), resume=False) as opened:
        original = opened.write

        def write(entries: Iterable[Entry]) -> None:
            entries = list(entries)
            groups.append((out.getvalue().count(b"\n"), [entry.id for entry in entries]))
            original(entries)

        opened.write = write  # type: ignore[method-assign]
        reorder = Reorder(out, window, journal=opened)
        reorder.start()
        reorder.deliver([(0, "replayed")])  # never recorded: written, not journaled again
        reorder.record(1, [journal.digest("a"), journal.digest("b"), journal.digest("c")])
        reorder.deliver([(2, "B")])
        time.sleep(0.05)
        reorder.deliver([(1, "A\tα")])
        time.sleep(0.05)
        reorder.deliver([(3, "C")])
        reorder.end(4)
        assert reorder.done.wait(10) and reorder.status == 0
    assert out.getvalue() == "replayed\nA\tα\nB\nC\n".encode()
    assert journal.read(str(tmp_path / "j")) == [
        Entry(1, journal.digest("a"), "A\tα"), Entry(2, journal.digest("b"), "B"), Entry(3, journal.digest("c"), "C")
    ]
    # Every group reached the journal while stdout held none of its lines.
    assert all(lines_out <= min(ids) for lines_out, ids in groups if ids), groups


def test_a_journal_that_cannot_be_written_stops_the_output(tmp_path: Path) -> None:
    out = KeptOutput()
    window = Window(100, 1 << 20)
    with Journal.open(str(tmp_path / "j"), resume=False) as opened:
        def refuse(entries: Iterable[Entry]) -> None:
            raise JournalError("cannot write the journal j: No space left on device", status.FAILED)

        opened.write = refuse  # type: ignore[method-assign]
        logged: list[str] = []
        reorder = Reorder(out, window, logged.append, opened)
        reorder.start()
        reorder.record(0, [journal.digest("1")])
        reorder.deliver([(0, "1")])
        reorder.end(1)
        assert reorder.done.wait(10)
    assert reorder.status == status.FAILED and out.getvalue() == b""
    assert logged == ["pando: cannot write the journal j: No space left on device"]
