"""Pando as a package: what the wheel and the sdist hold, and the installed wheel's commands.

The wheel must serve browser volunteers by itself (test_package_browser.py
opens a tab on it): it carries the page and the Pyodide files the page loads,
and nothing else of node_modules.
"""
from __future__ import annotations

import hashlib
import subprocess
import tarfile
import zipfile

import pytest

from conftest import EXAMPLES, REPO, Processes, join_url, squares
from packaged import Dist, Venv
from pando import __version__, assets

# The build installs setuptools into two isolated environments: slow on a loaded machine.
pytestmark = pytest.mark.timeout(600)

SERVED_PYODIDE = {f"pando/web/node_modules/pyodide/{name}" for name in assets.PYODIDE_FILES}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_wheel_holds_the_page_and_exactly_the_pyodide_files_it_loads(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = set(wheel.namelist())
        web = {name for name in names if name.startswith("pando/web/")}
        page = {f"pando/web/{path.name}" for path in assets.WEB_DIR.iterdir() if path.is_file()}
        assert web == page | SERVED_PYODIDE
        for name in assets.PYODIDE_FILES:  # the very files this checkout serves
            packed = wheel.read(f"pando/web/node_modules/pyodide/{name}")
            assert digest(packed) == digest((assets.PYODIDE_DIR / name).read_bytes()), name
    assert {"pando/__main__.py", "pando/volunteer.py", "pando/assets.py"} <= names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)


def test_sdist_holds_license_docs_examples_tests_and_the_served_pyodide(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as sdist:
        names = {member.name.partition("/")[2] for member in sdist.getmembers() if member.isfile()}
    expected = {"LICENSE", "README.md", "pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in", "Makefile",
                "pytest.ini", "test/conftest.py", "pando/web/package-lock.json"}
    for folder in ("examples", "docs"):
        expected |= {f"{folder}/{path.name}" for path in (REPO / folder).iterdir() if path.is_file()}
    assert expected | SERVED_PYODIDE <= names
    assert {name for name in names if "/node_modules/" in name} == SERVED_PYODIDE


def run(venv: Venv, procs: Processes, *args: str) -> str:
    done = procs.run([venv.command("python"), *args], cwd=procs.tmp)  # not the checkout: its pando would win
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def test_installed_commands_and_python_m_give_the_version(installed: Venv, procs: Processes) -> None:
    assert run(installed, procs, "-c", "import pando.assets; print(pando.assets.WEB_DIR)").startswith(
        str(installed.path / "lib"))
    for module, script in (("pando", "pando"), ("pando.volunteer", "pando-volunteer")):
        assert run(installed, procs, "-m", module, "--version") == f"{__version__}\n"
        by_script = procs.run([installed.command(script), "--version"], cwd=procs.tmp)
        assert by_script.stdout.decode() == f"{__version__}\n"


def test_python_m_pando_and_python_m_pando_volunteer_run_a_job(installed: Venv, procs: Processes) -> None:
    python = installed.command("python")
    root = procs.pando(str(EXAMPLES / "square_fast.py"), "--start-idle", *map(str, range(1, 21)),
                       command=(python, "-m", "pando"), cwd=procs.tmp)
    volunteer = procs.popen([python, "-m", "pando.volunteer", join_url(root.port), "--workers", "1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=procs.tmp)
    assert root.wait(120) == 0, root.err
    assert root.out == squares(range(1, 21))
    assert volunteer.wait(30) == 0
    assert "Pyodide" not in root.err  # the wheel brought it: no warning
