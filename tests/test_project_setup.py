"""The set-up that `make test` and `make book` run on a fresh machine: every pip call holds the
constraints, and the lock pins every requirement within its range.

A fresh machine once failed here: torch pulled a newer setuptools in mid-install, and visdom's
setup.py (which imports pkg_resources, gone from setuptools>=81) could no longer build.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _lock() -> dict[str, Version]:
    pins = {}
    for req in _requirements(ROOT / "requirements.lock"):
        (spec,) = req.specifier
        assert spec.operator == "==", f"requirements.lock: {req} is not an exact pin"
        pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_every_pip_install_of_the_setup_holds_the_constraints(tmp_path):
    # -B and a venv path that does not exist: make prints every command of the set-up as a fresh
    # machine would run it, and runs none of them (-n)
    out = subprocess.run(
        ["make", "-n", "-B", "--no-print-directory", "setup", f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installs = [line for line in out.splitlines() if re.search(r"\bpip install\b", line)]
    assert len(installs) >= 4, out
    for line in installs:
        assert "-c constraints.txt" in line and "-c requirements.lock" in line, line


def test_constraints_hold_setuptools_below_81():
    (req,) = [r for r in _requirements(ROOT / "constraints.txt") if r.name == "setuptools"]
    assert not req.specifier.contains("81.0") and req.specifier.contains("80.9")
    assert req.specifier.contains(str(_lock()["setuptools"]))


def test_lock_pins_every_requirement_within_its_range():
    pins = _lock()
    for req in _requirements(ROOT / "requirements.txt") + [Requirement("visdom==0.2.4")]:
        name = canonicalize_name(req.name)
        assert name in pins, f"requirements.lock does not pin {req.name} (run 'make lock')"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[name]}, outside requirements.txt's {req}"
        )


def test_lock_has_no_local_version_labels():
    # a '+cu130' or '+cpu' pin exists only on the index that built it, not on the public registry
    text = (ROOT / "requirements.lock").read_text()
    assert not re.search(r"==\S*\+", text)
