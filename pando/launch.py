"""A run, from the command line's options to its exit status: the items' source, the module and
the files that go with it, then ``--local`` or the root.

Apart from :mod:`pando.cli` because this imports everything a run needs, and the command line
starts the root's own helper before that (:mod:`pando.helper`).
"""
from __future__ import annotations

import os
import sys
from typing import Any, BinaryIO, Iterable

from pando import access, dependencies, rendezvous, status, stdout, usage
from pando.bundle import BundleError, size_text
from pando.console import Console
from pando.dependencies import Shipment
from pando.helper import Helper
from pando.local import run_local
from pando.module import ModuleError, load_file
from pando.reader import argv_batches, stdin_unbuffered, stream_batches
from pando.root import Root, Settings
from pando.server import raise_file_limit


def run(args: dict[str, Any], options: dict[str, Any], module_path: str, console: Console,
        helper: Helper | None) -> int:
    """Run with the parsed ``args`` and resolved ``options``, and the root's own ``helper`` (already
    starting) if it computes; the exit status. PandoError (UsageError among them) if it cannot start."""
    secret = options["secret"] or os.environ.get("PANDO_SECRET") or ""
    if options["host"] is not None:
        rendezvous.server_urls(options["host"])  # a bad --host stops the run before anything starts
        if not secret:
            raise status.PandoError("--host needs the server's secret: --secret SECRET, or PANDO_SECRET in the environment")
    ice_servers = rendezvous.ice_servers(options["ice-servers"] or "")
    key = options["join-key"]
    if key is not None:
        access.check_key(key, "--join-key")
    elif not options["local"]:
        key = access.user_key()
    batches, total = _items(args, options["stdin"])
    out = stdout.claim()  # before the module runs a line: its prints must never reach the results
    try:
        source, fn = load_file(module_path)
    except ModuleError as exc:
        raise status.PandoError(str(exc)) from None
    shipment = Shipment() if options["local"] else _shipment(module_path, console)
    try:
        if options["local"]:
            code = run_local(fn, batches, out, options["journal"], options["resume"], options["timeout"],
                             options["raw"])
        else:
            raise_file_limit()
            settings = Settings(
                port=options["port"],
                bind=options["bind"],
                join_key=key,
                batch_size=options["batch-size"],
                heartbeat_ms=options["heartbeat"],
                start_idle=options["start-idle"],
                seed=options["seed"],
                timeout=options["timeout"],
                retries=options["retries"],
                verify=options["verify"] or 1,
                journal=options["journal"],
                resume=options["resume"],
                reporting_interval=options["reporting-interval"],
                host=options["host"],
                secret=secret,
                ice_servers=ice_servers,
                bootstrap_timeout=options["bootstrap-timeout"],
                degree=options["degree"],
                global_monitoring=options["global-monitoring"],
                raw=options["raw"],
            )
            code = Root(settings, os.path.basename(module_path), source, batches, total, out, console, shipment,
                        helper).run()
    except BrokenPipeError:
        code = status.BROKEN_PIPE
    return _close(out, code)


def _items(args: dict[str, Any], read_stdin: bool | None) -> tuple[Iterable[list[str]], int | None]:
    """The items' batches, from their one source, and how many there are if that is known.

    ``read_stdin`` is the stdin option: from the command line or the config, or None.
    """
    arguments, arg_file = args["ITEM"], args["--arg-file"]
    if sum(map(bool, (arguments, arg_file, args["--stdin"]))) > 1:
        raise usage.UsageError("give the items in one way: ITEM arguments, --arg-file or --stdin")
    if arguments:
        return argv_batches(arguments), len(arguments)
    separator = b"\0" if args["--null"] else b"\n"
    if arg_file is not None and arg_file != "-":
        try:
            stream: BinaryIO = open(arg_file, "rb", buffering=0)
        except OSError as exc:
            raise status.PandoError(f"cannot read --arg-file {arg_file}: {exc.strerror or exc}") from None
        return stream_batches(stream, separator=separator), None
    if read_stdin is None:  # neither the command line nor the config says: a pipe or a file is read, a terminal not
        read_stdin = sys.stdin is not None and not sys.stdin.isatty()
    if arg_file == "-" or read_stdin:
        return stream_batches(stdin_unbuffered(), separator=separator), None
    return argv_batches([]), 0


def _shipment(module_path: str, console: Console) -> Shipment:
    """What goes to volunteers with the module, said on stderr; PandoError if its files cannot go."""
    name = os.path.basename(module_path)
    try:
        shipment = dependencies.find(module_path)
    except (BundleError, OSError) as exc:  # over the limits; or a file that went away or cannot be read
        raise status.PandoError(f"cannot send {name} to volunteers: {exc}") from None
    if shipment.files:
        console.log(f"pando: volunteers get {name} and {shipment.files} file(s) it imports ({size_text(shipment.size)})")
    if shipment.native_only:
        console.log(f"pando: browsers cannot run {name}: it needs {'; '.join(shipment.native_only)}; "
                    "native volunteers (pando-volunteer) compute it")
    return shipment


def _close(out: BinaryIO, code: int) -> int:
    """Close the results' stream; a last write that fails there still fails the run."""
    try:
        out.close()
    except BrokenPipeError:
        return code if code != status.OK else status.BROKEN_PIPE
    except OSError as exc:
        if code == status.OK:
            print(f"pando: cannot write results: {exc.strerror or exc}", file=sys.stderr)
            return status.FAILED
    return code
