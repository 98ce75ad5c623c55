"""Fixtures for the tests of Pando as a package: built, installed in a fresh venv, or copied without Pyodide.

The build is ``python -m build``, as a release would make it: the sdist from
this checkout, then the wheel from that sdist, each in an isolated environment
that installs what pyproject.toml's [build-system] requires from the registry.
The wheel is then installed as a user would, its dependencies from the registry too.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Venv:
    """A fresh venv with the wheel installed; run its commands from outside the checkout."""

    path: Path

    def command(self, name: str) -> str:
        return str(self.path / "bin" / name)


def _run(args: list[str], timeout: float) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)], timeout=300)
    [sdist], [wheel] = out.glob("*.tar.gz"), out.glob("*.whl")
    return Dist(sdist, wheel)


@pytest.fixture(scope="session")
def installed(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The wheel and its dependencies pip-installed in a new venv, by this venv's pip."""
    venv = Venv(tmp_path_factory.mktemp("installed") / "venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv.path)], timeout=120)
    _run([sys.executable, "-m", "pip", "--python", venv.command("python"), "install", "-q", str(dist.wheel)], timeout=300)
    return venv


@pytest.fixture
def without_pyodide(tmp_path: Path) -> Path:
    """A folder holding a copy of the checkout's ``pando`` as a checkout before ``npm ci``:
    ``python -m pando`` run there is that copy."""
    shutil.copytree(REPO / "pando", tmp_path / "pando", ignore=shutil.ignore_patterns("node_modules", "__pycache__"))
    return tmp_path
