"""Modules with files beside them and packages they import: found at the root, sent, checked, unpacked.

The runs are real: a ``pando`` root and ``pando-volunteer`` processes, a
volunteer that lacks a package the root has (it comes in the bundle), a
module over the limits refused at the root, a compiled package that keeps
browsers out while native volunteers compute, and a hostile root whose
archives a volunteer refuses without writing a file outside its own folder.
"""
from __future__ import annotations

import base64
import importlib.metadata
import io
import json
import stat
import subprocess
import textwrap
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest
from websockets.sync.server import ServerConnection, serve

from conftest import KEY, VOLUNTEER, Processes, join_url
from pando import bundle, dependencies, protocol
from pando.bundle import BundleError

pytestmark = pytest.mark.timeout(120)

# A module that imports a sibling module, a sibling package (with a data file read through
# importlib.resources), an installed pure-Python package (docopt, a dependency of pando's) and a
# package that only the root's PYTHONPATH has.
MODULE = """
    import importlib.metadata

    import docopt
    import helper
    import tinypkg
    from shapes.sub import deep

    import pando
    import shapes


    @pando.function
    def work(x):
        return f"{helper.double(x)} {deep.VALUE} {tinypkg.tag(x)} {shapes.data()} {docopt.__name__} " \\
               f"{importlib.metadata.version('docopt-ng')}"
"""
FILES = {
    "helper.py": "def double(x):\n    return 2 * x\n",
    "shapes/__init__.py": "import importlib.resources\n\n\ndef data():\n"
                          "    return importlib.resources.files(__name__).joinpath('data.txt').read_text().strip()\n",
    "shapes/data.txt": "square\n",
    "shapes/sub/__init__.py": "",
    "shapes/sub/deep.py": "VALUE = 42\n",
    # Beside the module but never imported, hidden, or not a package: none of these is sent.
    "unrelated.py": "SECRET = 1\n",
    "notes/todo.py": "",
    ".hidden/x.py": "",
    "shapes/__pycache__/junk.pyc": "",
    "shapes/.git/config": "",
}
EXTRA = {"tinypkg/__init__.py": "def tag(x):\n    return f'<{x}>'\n"}
ITEMS = [str(n) for n in range(1, 21)]


def write_tree(top: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = top / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """The module in a folder of its own, and a folder for the root's PYTHONPATH."""
    folder, extra = tmp_path / "project", tmp_path / "extra"
    write_tree(folder, {"work.py": textwrap.dedent(MODULE), **FILES})
    write_tree(extra, EXTRA)
    return folder / "work.py", extra


def expected(values: list[str]) -> bytes:
    version = importlib.metadata.version("docopt-ng")
    return "".join(f"{2 * int(v)} 42 <{v}> square docopt {version}\n" for v in values).encode()


def names(shipment: dependencies.Shipment) -> set[str]:
    data = base64.b64decode(shipment.bundle)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return set(archive.namelist())


# -- what is sent -------------------------------------------------------------------------------


def test_imports_tell_needed_from_optional() -> None:
    source = textwrap.dedent("""
        import a.b, c
        from d.e import f
        from . import g
        try:
            import h
        except ImportError:
            import i
        def lazy():
            import j
    """)
    assert dependencies.imports(source) == {"a": True, "c": True, "d": True, "h": False, "i": False, "j": True}
    # In an installed package, an import in a function is an optional extra.
    assert dependencies.imports(source, library=True)["j"] is False
    assert dependencies.imports("this is not python") == {}


def test_only_what_the_module_imports_is_sent(project: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    module, extra = project
    monkeypatch.syspath_prepend(str(extra))
    monkeypatch.syspath_prepend(str(module.parent))
    shipment = dependencies.find(str(module))
    sent = names(shipment)
    assert {"module/helper.py", "module/shapes/__init__.py", "module/shapes/data.txt", "module/shapes/sub/__init__.py",
            "module/shapes/sub/deep.py", "site/tinypkg/__init__.py", "site/docopt/__init__.py"} <= sent
    assert any(name.startswith("site/docopt_ng-") and name.endswith(".dist-info/METADATA") for name in sent)
    assert not [name for name in sent if "unrelated" in name or "notes" in name or "/." in name or "pycache" in name]
    assert not [name for name in sent if name.startswith("site/pando") or name.startswith("site/json")]
    assert shipment.native_only == ()
    assert shipment.files == len(sent)


def test_a_module_that_imports_nothing_beside_it_sends_nothing(tmp_path: Path) -> None:
    module = tmp_path / "plain.py"
    module.write_text("import json, pando\n")
    assert dependencies.find(str(module)) == dependencies.Shipment()


# -- the archive, as a volunteer checks it ------------------------------------------------------


def archive(*entries: tuple[str | zipfile.ZipInfo, bytes]) -> str:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a name written twice: that is the point
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as made:
            for name, data in entries:
                made.writestr(name, data)
    return base64.b64encode(out.getvalue()).decode()


def symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def lying_about_its_size() -> str:
    """A zip bomb in small: it says 10 bytes, and 1 MiB of zeros inflate out of it."""
    data = bytearray(base64.b64decode(archive(("module/bomb.py", b"\0" * (1 << 20)))))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header, central directory
        at = data.index(signature) + offset
        data[at:at + 4] = (10).to_bytes(4, "little")
    return base64.b64encode(bytes(data)).decode()


#: Archives a root may not send, and why a volunteer refuses each.
HOSTILE = {
    "parent": (archive(("module/../../evil.py", b"x")), "unsafe file name"),
    "absolute": (archive(("/tmp/evil.py", b"x")), "unsafe file name"),
    "outside": (archive(("evil.py", b"x")), "unsafe file name"),
    "backslash": (archive(("module\\..\\..\\evil.py", b"x")), "unsafe file name"),
    "symlink": (archive((symlink("module/evil.py"), b"/etc/passwd")), "is not a plain file"),
    "twice": (archive(("module/a.py", b"1"), ("module/a.py", b"2")), "twice"),
    "too many": (archive(*((f"module/{n}.py", b"") for n in range(bundle.MAX_FILES + 1))), "over the limit of 1000"),
    "too big": (archive(("module/big.bin", b"\0" * (bundle.MAX_BYTES + 1))), "unpacks to over 8.0 MiB"),
    "lying": (lying_about_its_size(), "cannot be unpacked"),
    "not base64": ("$$$", "not base64"),
    "not a zip": (base64.b64encode(b"PK\x03\x04 nothing else").decode(), "cannot be unpacked"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_unsafe_archives_are_refused(name: str, tmp_path: Path) -> None:
    text, why = HOSTILE[name]
    into = tmp_path / "job"
    into.mkdir()
    with pytest.raises(BundleError, match=why):
        bundle.unpack(text, str(into))
    assert not list(tmp_path.rglob("evil.py"))
    assert sum(path.stat().st_size for path in into.rglob("*") if path.is_file()) <= 10


def test_a_bundle_unpacks_to_what_was_packed(tmp_path: Path) -> None:
    files = [("module/a.py", b"A = 1\n"), ("module/pkg/__init__.py", b""), ("site/lib.py", b"L = 2\n")]
    bundle.unpack(bundle.pack(files), str(tmp_path))
    assert {path.relative_to(tmp_path).as_posix(): path.read_bytes() for path in tmp_path.rglob("*")
            if path.is_file()} == dict(files)


# -- real runs ----------------------------------------------------------------------------------


def test_a_volunteer_gets_the_files_and_a_package_it_lacks(procs: Processes, project: tuple[Path, Path]) -> None:
    module, extra = project
    local = procs.pando(str(module), "--local", *ITEMS, PYTHONPATH=str(extra))
    assert local.wait() == 0, local.err
    assert local.out == expected(ITEMS)
    root = procs.pando(str(module), "--start-idle", *ITEMS, PYTHONPATH=str(extra))
    root.wait_for_stderr(r"pando: volunteers get work\.py and \d+ file\(s\) it imports")
    # Without the root's PYTHONPATH, and in another folder: tinypkg and the module's files come in the bundle.
    scratch = procs.tmp / "scratch"
    scratch.mkdir()
    volunteer = procs.popen([VOLUNTEER, join_url(root.port), "--workers", "2"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=scratch,
                            env=procs.env(TMPDIR=str(scratch)))
    assert root.wait() == 0, root.err
    assert root.out == local.out
    _, err = volunteer.communicate(timeout=30)
    assert volunteer.returncode == 0, err.decode()
    assert not list(scratch.iterdir()), "the job's folder was left behind"


def test_the_root_helper_computes_with_the_files_too(procs: Processes, project: tuple[Path, Path]) -> None:
    module, extra = project
    root = procs.pando(str(module), "--workers", "1", *ITEMS, PYTHONPATH=str(extra))
    assert root.wait() == 0, root.err
    assert root.out == expected(ITEMS)


def test_a_module_whose_files_are_over_the_limit_is_refused(procs: Processes, tmp_path: Path) -> None:
    folder = tmp_path / "big"
    write_tree(folder, {"big.py": "import pando, data\npando.function(lambda x: x)\n", "data/__init__.py": ""})
    (folder / "data" / "table.bin").write_bytes(b"\0" * (bundle.MAX_BYTES + 1))
    root = procs.pando(str(folder / "big.py"), "1")
    assert root.wait() == 2
    assert "pando: cannot send big.py to volunteers: the files big.py imports from its folder are over the limit" \
        in root.err
    assert f"the biggest is {folder / 'data' / 'table.bin'}" in root.err
    assert "keep data files out of the packages beside the module" in root.err
    assert root.out == b""
    # Too many files is refused the same way; --local sends nothing, so it runs.
    write_tree(folder, {f"data/part{n}.py": "" for n in range(bundle.MAX_FILES)})
    (folder / "data" / "table.bin").unlink()
    many = procs.pando(str(folder / "big.py"), "1")
    assert many.wait() == 2 and "files big.py imports from its folder are over the limit" in many.err
    local = procs.pando(str(folder / "big.py"), "--local", "1")
    assert local.wait() == 0 and local.out == b"1\n"


# A package with compiled extension modules (greenlet comes with playwright, of the test extras).
COMPILED = """
    import greenlet
    import pando


    @pando.function
    def switch(x):
        return greenlet.greenlet(lambda: x * 3).switch()
"""


def test_a_compiled_package_is_said_at_the_root_and_natives_compute(procs: Processes, tmp_path: Path) -> None:
    pytest.importorskip("greenlet", reason="greenlet (a dependency of playwright) is the compiled package used here")
    module = tmp_path / "compiled.py"
    module.write_text(textwrap.dedent(COMPILED))
    root = procs.pando(str(module), "--start-idle", "1", "2", "3")
    line = root.wait_for_stderr(r"pando: browsers cannot run compiled\.py: .*")
    assert "greenlet (compiled extension modules)" in line.group(0)
    assert "native volunteers (pando-volunteer) compute it" in line.group(0)
    procs.volunteer(root.port, "--workers", "1")
    assert root.wait() == 0, root.err
    assert root.out == b"3\n6\n9\n"
    assert root.err.count("browsers cannot run") == 1


# -- a hostile root -----------------------------------------------------------------------------


class HostileRoot:
    """A WebSocket server that answers any hello with a module frame carrying ``files``; records what comes back."""

    def __init__(self, files: str) -> None:
        self.files = files
        self.received: list[dict[str, Any]] = []
        self._server = serve(self._serve, "127.0.0.1", 0, max_size=None)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _serve(self, connection: ServerConnection) -> None:
        self.received.append(json.loads(connection.recv(timeout=10)))
        frame = protocol.Module("0badf00d", "hostile.py", "import pando\npando.function(lambda x: x)\n", 30000, 1,
                                bundle=self.files)
        connection.send(protocol.encode(frame))
        for message in connection:
            self.received.append(json.loads(message))

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(5)


@pytest.fixture
def hostile_root(request: pytest.FixtureRequest) -> Iterator[HostileRoot]:
    root = HostileRoot(HOSTILE[request.param][0])
    yield root
    root.close()


@pytest.mark.parametrize("hostile_root", ["parent", "absolute", "symlink", "lying"], indirect=True)
def test_a_volunteer_refuses_a_hostile_archive(procs: Processes, hostile_root: HostileRoot,
                                               request: pytest.FixtureRequest) -> None:
    why = HOSTILE[request.node.callspec.params["hostile_root"]][1]
    work, scratch = procs.tmp / "work", procs.tmp / "scratch"
    work.mkdir()
    scratch.mkdir()
    volunteer = procs.popen([VOLUNTEER, join_url(hostile_root.port, KEY), "--protocol", "websocket"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=work,
                            env=procs.env(TMPDIR=str(scratch)))
    out, err = volunteer.communicate(timeout=30)
    assert volunteer.returncode == 1, err.decode()
    assert out == b""
    assert "pando-volunteer: cannot run the module: the module's files from the root are refused: " in err.decode()
    assert why in err.decode()
    errors = [frame for frame in hostile_root.received if frame["type"] == "error"]
    assert len(errors) == 1 and "the module's files from the root are refused" in errors[0]["message"]
    assert not list(procs.tmp.rglob("evil.py")) and not Path("/tmp/evil.py").exists()
    assert not list(scratch.iterdir()), "the refused job's folder was left behind"
