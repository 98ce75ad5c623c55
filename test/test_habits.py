"""Command-line habits of Unix filters, with real pando, pando-volunteer and pando-server processes:
items from stdin by default, `--` anywhere, plain usage errors, --no-X, --raw, --arg-file and --null."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import EXAMPLES, PANDO, Processes, join_url, lines, squares
from pando import cli, config

pytestmark = pytest.mark.timeout(120)

FAST = str(EXAMPLES / "square_fast.py")
VOLUNTEER = str(Path(PANDO).with_name("pando-volunteer"))
SERVER = str(Path(PANDO).with_name("pando-server"))

KINDS = """
import pando

@pando.function
def kind(x):
    return f"{type(x).__name__}:{x!r}"
"""

MODES = {"local": ["--local"], "root": [], "volunteer": ["--start-idle"]}


def kinds(procs: Processes) -> str:
    path = procs.tmp / "kinds.py"
    path.write_text(textwrap.dedent(KINDS))
    return str(path)


def run_in(procs: Processes, mode: str, *args: str, stdin: bytes | None = None) -> tuple[int, bytes, str]:
    """Run pando in a mode (--local, the root's own helper, a pando-volunteer): its status, stdout, stderr."""
    root = procs.pando(*MODES[mode], *args, stdin=stdin, port=None if mode == "local" else 0)
    if mode == "volunteer":
        procs.volunteer(root.port, "--workers", "1")
    return root.wait(), root.out, root.err


def write_config(procs: Processes, settings: dict[str, object]) -> None:
    (procs.home / ".pando" / "config.json").write_text(json.dumps(settings))


# -- standard input without --stdin ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["local", "root"])
def test_items_come_from_stdin_when_there_are_no_item_arguments(procs: Processes, mode: str) -> None:
    code, out, err = run_in(procs, mode, FAST, stdin=lines(*range(1, 101)))
    assert code == 0, err
    assert out == squares(range(1, 101))


@pytest.mark.parametrize("idle", [[], ["--start-idle"]])
def test_empty_stdin_is_zero_items(procs: Processes, idle: list[str]) -> None:
    root = procs.pando(FAST, *idle)  # `pando m.py < /dev/null`
    assert root.wait(30) == 0, root.err
    assert root.out == b""


def test_item_arguments_win_over_stdin(procs: Processes) -> None:
    root = procs.pando(FAST, "--local", "3", stdin=lines(5, 6), port=None)
    assert root.wait() == 0 and root.out == b"9\n"


# -- -- ends the options -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["local", "root"])
def test_double_dash_ends_the_options_wherever_it_stands(procs: Processes, mode: str) -> None:
    code, out, err = run_in(procs, mode, kinds(procs), "1", "--", "-5", "--quiet", "--", "x")
    assert code == 0, err
    assert out.decode().splitlines() == ["int:1", "int:-5", "str:'--quiet'", "str:'--'", "str:'x'"]


def test_the_module_may_come_after_the_double_dash(procs: Processes) -> None:
    done = procs.run([PANDO, "--local", "--", kinds(procs), "-2"])
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"int:-2\n"


def test_an_option_value_never_comes_from_after_the_double_dash(procs: Processes) -> None:
    done = procs.run([PANDO, FAST, "--local", "--seed", "--", "5"])
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode().splitlines()[0] == "pando: --seed requires argument"


# -- plain usage errors ------------------------------------------------------------------------

PANDO_USAGE = ["Usage:", "  pando MODULE [options] [--] [ITEM...]", "  pando (-h | --help | --version)"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus"], "pando: unknown option --bogus"),
        (["--bogus=3", "1"], "pando: unknown option --bogus"),
        (["-x"], "pando: unknown option -x"),
        (["--s"], "pando: --s is ambiguous: --stdin, --start-idle, --seed, --secret"),
        (["--port"], "pando: --port requires argument"),
        (["--quiet=yes"], "pando: --quiet must not have an argument"),
        (["--port", "1", "--port", "2"], "pando: --port is given more than once"),
        (["--port", "http"], "pando: --port must be an integer, not 'http'"),
        (["--batch-size", "0"], "pando: --batch-size must be between 1 and 1e+06, not 0"),
        (["--stdin", "1"], "pando: give the items in one way: ITEM arguments, --arg-file or --stdin"),
        (["-a", "f", "1"], "pando: give the items in one way: ITEM arguments, --arg-file or --stdin"),
        (["--raw", "--no-raw"], "pando: --raw and --no-raw contradict each other"),
    ],
)
def test_a_bad_command_line_is_one_plain_line_and_the_usage(procs: Processes, args: list[str], message: str) -> None:
    done = procs.run([PANDO, FAST, *args])
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode().splitlines() == [message, *PANDO_USAGE]


def test_a_missing_module_is_named_with_the_usage(procs: Processes) -> None:
    done = procs.run([PANDO])
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == ["pando: missing arguments", *PANDO_USAGE]


@pytest.mark.parametrize(
    "program, args, message",
    [
        (VOLUNTEER, [join_url(1), "--bogus"], "pando-volunteer: unknown option --bogus"),
        (VOLUNTEER, [join_url(1), "extra"], "pando-volunteer: unexpected argument 'extra'"),
        (VOLUNTEER, [join_url(1), "--workers", "none"],
         "pando-volunteer: --workers must be a positive integer, not 'none'"),
        (SERVER, ["--bogus"], "pando-server: unknown option --bogus"),
        (SERVER, ["--", "-q"], "pando-server: unexpected argument '-q'"),
        (SERVER, ["--port", "x", "--secret", "s" * 16], "pando-server: --port must be an integer from 0 to 65535, not 'x'"),
    ],
)
def test_the_other_commands_complain_the_same_way(procs: Processes, program: str, args: list[str], message: str) -> None:
    done = procs.run([program, *args])
    assert done.returncode == 2 and done.stdout == b""
    err = done.stderr.decode().splitlines()
    assert err[0] == message and err[1] == "Usage:" and err[2].startswith(f"  {Path(program).name} ")
    assert "Option(" not in done.stderr.decode() and "Argument(" not in done.stderr.decode()


# -- --no-X for every on/off option of config.json ---------------------------------------------


def test_every_on_off_option_of_the_config_has_a_no_form(procs: Processes) -> None:
    switches = [key for key, kind in config.KEYS.items() if kind is bool]
    assert set(switches) == set(cli.SWITCHES) and "raw" in switches
    for key in switches:
        done = procs.run([PANDO, FAST, f"--{key}", f"--no-{key}"])
        assert done.stderr.decode().splitlines()[0] == f"pando: --{key} and --no-{key} contradict each other"


def test_no_raw_and_no_local_switch_off_the_config(procs: Processes) -> None:
    write_config(procs, {"raw": True, "local": True})
    raw = procs.pando(kinds(procs), "1.50", port=None)
    assert raw.wait() == 0 and raw.out == b"str:'1.50'\n" and "Serving" not in raw.err
    typed = procs.pando(kinds(procs), "--no-raw", "--no-local", "1.50")
    assert typed.wait() == 0, typed.err
    assert typed.out == b"float:1.5\n" and "Serving volunteer code" in typed.err


def test_no_start_idle_switches_off_the_config(procs: Processes) -> None:
    write_config(procs, {"start-idle": True})
    root = procs.pando(FAST, "--no-start-idle", "4")  # no volunteer: only the root's own helper can compute
    assert root.wait(60) == 0, root.err
    assert root.out == b"16\n"


def test_stdin_false_in_the_config_and_no_stdin(procs: Processes) -> None:
    write_config(procs, {"stdin": False})
    ignored = procs.pando(FAST, "--local", stdin=lines(2), port=None)
    assert ignored.wait() == 0 and ignored.out == b""
    read = procs.pando(FAST, "--local", "--stdin", stdin=lines(2), port=None)
    assert read.wait() == 0 and read.out == b"4\n"
    write_config(procs, {"stdin": True})
    switched_off = procs.pando(FAST, "--local", "--no-stdin", stdin=lines(2), port=None)
    assert switched_off.wait() == 0 and switched_off.out == b""


# -- --raw --------------------------------------------------------------------------------------

RAW_ITEMS = ["1.50", "1e3", "42", "007", "-0", " 7", ""]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_raw_items_reach_the_function_as_written(procs: Processes, mode: str) -> None:
    code, out, err = run_in(procs, mode, kinds(procs), "--raw", stdin=lines(*RAW_ITEMS))
    assert code == 0, err
    assert out.decode().splitlines() == [f"str:{item!r}" for item in RAW_ITEMS]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_without_raw_items_are_typed(procs: Processes, mode: str) -> None:
    code, out, err = run_in(procs, mode, kinds(procs), stdin=lines("1.50", "1e3", "42"))
    assert code == 0, err
    assert out.decode().splitlines() == ["float:1.5", "float:1000.0", "int:42"]


# -- --arg-file and --null ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["local", "root"])
def test_arg_file_items(procs: Processes, mode: str) -> None:
    items = procs.tmp / "items.txt"
    items.write_bytes(lines(*range(1, 51)))
    code, out, err = run_in(procs, mode, FAST, "-a", str(items), stdin=lines(99))  # stdin is left alone
    assert code == 0, err
    assert out == squares(range(1, 51))
    code, out, err = run_in(procs, mode, FAST, f"--arg-file={items}")
    assert code == 0 and out == squares(range(1, 51)), err


def test_arg_file_dash_is_stdin_even_with_no_stdin(procs: Processes) -> None:
    root = procs.pando(FAST, "--local", "--no-stdin", "-a", "-", stdin=lines(3, 4), port=None)
    assert root.wait() == 0 and root.out == b"9\n16\n"


def test_an_arg_file_that_cannot_be_read(procs: Processes) -> None:
    done = procs.run([PANDO, FAST, "--local", "-a", str(procs.tmp / "missing.txt")])
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.decode() == f"pando: cannot read --arg-file {procs.tmp / 'missing.txt'}: No such file or directory\n"


NASTY_PATHS = ["plain.txt", "with\nnewline", "with\r\ncarriage return", " spaced ", "-dash", "ünïcode", "tab\there"]


@pytest.mark.parametrize("mode", ["local", "root"])
def test_null_separated_items_keep_their_newlines(procs: Processes, mode: str) -> None:
    names = procs.tmp / "names"
    names.mkdir()
    for name in NASTY_PATHS:
        (names / name).write_text("x")
    found = subprocess.run(["find", str(names), "-type", "f", "-print0"], capture_output=True, check=True).stdout
    listed = procs.tmp / "listed"
    listed.write_bytes(found)
    # -0 both as the short option and the long one, from stdin and from a file.
    for args, stdin in ((["-0"], found), (["--null", "-a", str(listed)], None)):
        code, out, err = run_in(procs, mode, kinds(procs), "--raw", *args, stdin=stdin)
        assert code == 0, err
        results = out.decode().splitlines()
        expected = [f"str:{os.fsdecode(path)!r}" for path in found.split(b"\0")[:-1]]
        assert results == expected and len(results) == len(NASTY_PATHS)


def test_null_separated_limits_still_apply(procs: Processes) -> None:
    big = procs.pando(FAST, "--local", "-0", stdin=b"1\0" + b"9" * (9 * 1024 * 1024) + b"\0" + b"3\0", port=None)
    assert big.wait() == 3
    assert big.out == b"1\n" and "item 2 is longer than 8388608 bytes" in big.err
    bad = procs.pando(FAST, "--local", "-0", stdin=b"1\x002\x00\xff\x004\x00", port=None)
    assert bad.wait() == 3
    assert bad.out == b"1\n4\n" and "item 3 is not valid UTF-8" in bad.err


def test_a_short_option_that_looks_like_a_number_is_that_option(procs: Processes) -> None:
    # docopt alone reads -0 as the number; as an option's value it stays one.
    done = procs.run([PANDO, kinds(procs), "--local", "--raw", "-0", "--seed", "-0"], input=b"a\0b\0")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"str:'a'\nstr:'b'\n"
