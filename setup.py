"""Build hooks; the metadata lives in setup.cfg.

The wheel and the sdist carry the volunteer page and the Pyodide files it
loads (:data:`pando.assets.PYODIDE_FILES`), which npm installs into
``pando/web/node_modules/``; the rest of node_modules stays out. Building
either from a checkout without those files runs ``npm ci`` first; building
from an sdist, which has them, needs no npm. An editable install serves the
checkout's own files and never runs npm (``make install`` does).
"""
import shutil
import sys
from pathlib import Path

from setuptools import Command, setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.errors import ExecError

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the pando being built, not an installed one
from pando import assets  # noqa: E402  (standard library only, so it imports in a bare build environment)

NPM_CI = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]


def install_pyodide(command: Command) -> None:
    """Run ``npm ci`` in pando/web (pinned by its package-lock.json) unless the served files are there."""
    if not assets.missing_pyodide():
        return
    if shutil.which("npm") is None:
        raise ExecError(f"Pyodide is missing from {assets.PYODIDE_DIR} and npm is not on PATH to install it: "
                        "install Node.js and npm, or build from an sdist (it carries Pyodide)")
    command.spawn([*NPM_CI, "--prefix", str(assets.WEB_DIR)])
    missing = assets.missing_pyodide()
    if missing:  # a Pyodide release that names its files otherwise
        raise ExecError(f"npm ci installed no {', '.join(missing)} into {assets.PYODIDE_DIR}: "
                        "pando.assets.PYODIDE_FILES must name what the page loads")


class BuildPy(build_py):
    """build_py, with Pyodide's served files as package data of pando.web."""

    def finalize_options(self) -> None:
        super().finalize_options()
        folder = assets.PYODIDE_DIR.relative_to(assets.WEB_DIR).as_posix()
        served = [f"{folder}/{name}" for name in assets.PYODIDE_FILES]
        self.package_data = {**self.package_data, "pando.web": [*self.package_data.get("pando.web", []), *served]}

    def run(self) -> None:
        if not self.editable_mode:
            install_pyodide(self)
        super().run()


class Sdist(sdist):
    """sdist, after making sure the Pyodide files it lists as package data exist."""

    def run(self) -> None:
        install_pyodide(self)  # first: the file list is made from what exists
        super().run()


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
