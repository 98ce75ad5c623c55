"""pando: lend a stream of items to volunteers and print their results in input order.

Usage:
  pando MODULE [options] [--] [ITEM...]
  pando (-h | --help | --version)

MODULE is a Python file that binds a function to the key '/pando/1.0.0',
most simply with the @pando.function decorator. Each ITEM, or with --stdin
each line of standard input, is lent to a volunteer: a browser tab that opened
one of the printed URLs, or a `pando-volunteer URL` process. Results are
printed on standard output, one line per item, in input order.

Options:
  --stdin           Read the items from standard input, one per line.
  --local           Compute here, one item after another, with no server and
                    no volunteers: to try a module on a few items.
  --start-idle      Leave all the computing to volunteers. Without it, this
                    machine computes while no volunteer is connected.
  --port=PORT       Port of the volunteer page and WebSocket endpoint
                    (default: 5000; 0 picks a free one).
  --batch-size=B    Items a volunteer may hold per worker at a time
                    (default: 1). More hides network latency.
  --heartbeat=MS    Heartbeat interval in milliseconds (default: 30000). A
                    volunteer silent for longer than twice that is dropped
                    and its items are lent to others.
  --seed=SEED       Integer that makes volunteer ids repeatable.
  -h --help         Show this text.
  --version         Show the version.

Items: an integer literal such as 42 or -7 reaches the function as an int,
a decimal literal such as 2.5 or 1e3 as a float, anything else (007 too) as
a str. Put -- before items that start with a dash. A result is printed as is
if it is a str, with str() if it is a number, and as JSON otherwise.

Defaults for any option can be set in $HOME/.pando/config.json, for example
{"port": 6000, "batch-size": 4, "start-idle": true}; the command line wins.

Exit status: 0 all results written; 1 the function failed on an item (it,
its value and the traceback are on stderr; every earlier result is written);
2 bad command line, config, module or port; 3 an input line that is not
UTF-8 or is longer than 8 MiB; 130 interrupted; 141 stdout was closed.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any

from docopt import DocoptExit, docopt

from pando import __version__, config, status
from pando.local import run_local
from pando.module import ModuleError, load_file
from pando.reader import InputError, argv_batches, stream_batches
from pando.root import Root, Settings
from pando.server import LOG as SERVER_LOG

# Built-in defaults, under the config file, under the command line.
DEFAULTS: dict[str, Any] = {"port": 5000, "batch-size": 1, "heartbeat": 30_000, "seed": None,
                            "start-idle": False, "stdin": False, "local": False}
_LIMITS = {"port": (0, 65535), "batch-size": (1, 1_000_000), "heartbeat": (100, 86_400_000)}


def _option(args: dict[str, Any], configured: dict[str, Any], key: str) -> Any:
    given = args[f"--{key}"]
    if given is None or given is False:
        return configured.get(key, DEFAULTS[key])
    if given is True:
        return True
    try:
        value = int(given)
    except ValueError:
        raise status.PandoError(f"--{key} must be an integer, not {given!r}") from None
    low, high = _LIMITS.get(key, (None, None))
    if low is not None and not low <= value <= high:
        raise status.PandoError(f"--{key} must be between {low} and {high}, not {value}")
    return value


def _quiet_libraries() -> None:
    """websockets logs through `logging`; keep it off the user's stderr."""
    SERVER_LOG.addHandler(logging.NullHandler())
    SERVER_LOG.propagate = False


def _run(args: dict[str, Any]) -> int:
    configured, warnings = config.load()
    for warning in warnings:
        print(f"pando: {warning}", file=sys.stderr)
    options = {key: _option(args, configured, key) for key in DEFAULTS}
    module_path = args["MODULE"]
    if options["stdin"] and args["ITEM"]:
        raise status.PandoError("give items on the command line or with --stdin, not both")
    try:
        source, fn = load_file(module_path)
    except ModuleError as exc:
        raise status.PandoError(str(exc)) from None
    batches = stream_batches(sys.stdin.buffer) if options["stdin"] else argv_batches(args["ITEM"])
    out = sys.stdout.buffer
    if options["local"]:
        return run_local(fn, batches, out)
    settings = Settings(
        port=options["port"],
        batch_size=options["batch-size"],
        heartbeat_ms=options["heartbeat"],
        start_idle=options["start-idle"],
        seed=options["seed"],
    )
    return Root(settings, os.path.basename(module_path), source, batches, out).run()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pando``; returns the exit status."""
    try:
        args = docopt(__doc__, argv=argv, version=__version__)
    except DocoptExit as exc:
        print(exc, file=sys.stderr)
        return status.USAGE
    _quiet_libraries()
    try:
        code = _run(args)
    except (status.PandoError, InputError) as exc:
        print(f"pando: {exc}", file=sys.stderr)
        code = exc.status
    except KeyboardInterrupt:
        print("pando: interrupted", file=sys.stderr)
        code = status.INTERRUPTED
    except BrokenPipeError:
        code = status.BROKEN_PIPE
    if code == status.BROKEN_PIPE:
        # Nothing more can reach stdout; keep the interpreter's final flush quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code


if __name__ == "__main__":
    sys.exit(main())
