"""The lock (requirements/*.lock) honours pyproject's ranges, and the locks agree with one another.

`make setup`, CI and the images install only from the locks; pyproject keeps the compatible ranges for
library users. These tests fail when the two drift apart: a direct dependency missing from a lock, a
locked version outside its range, two locks holding different versions of one package, an entry
without a hash, or a derived lock (the CPU image's) not regenerated.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "requirements"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", flags=re.M)


def pins(text: str) -> dict[str, str]:
    """name -> version of every `name==version` line of a lock or pins file."""
    return {canonicalize_name(n): v for n, v in PIN.findall(text)}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def lock_problems(requirements: list[str], lock_text: str, lock_name: str) -> list[str]:
    """What in `lock_text` disagrees with `requirements` (PEP 508 strings), one line each."""
    locked = pins(lock_text)
    problems = []
    for line in requirements:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name not in locked:
            problems.append(f"{req.name} ({line}) is missing from {lock_name}; run: make lock")
        elif not req.specifier.contains(Version(locked[name]), prereleases=True):
            problems.append(f"{lock_name} holds {req.name}=={locked[name]}, outside pyproject's {line!r}; run: make lock")
    return problems


def read(name: str) -> str:
    return (LOCKS / name).read_text()


def test_dev_lock_holds_every_runtime_and_dev_dependency_in_range() -> None:
    project = pyproject()["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    assert not lock_problems(wanted, read("dev.lock"), "dev.lock")


def test_runtime_lock_holds_every_runtime_dependency_in_range() -> None:
    assert not lock_problems(pyproject()["project"]["dependencies"], read("runtime.lock"), "runtime.lock")


def test_iabn_lock_holds_pyprojects_inplace_abn() -> None:
    assert not lock_problems(pyproject()["project"]["optional-dependencies"]["iabn"], read("iabn.lock"), "iabn.lock")


def test_pins_hold_in_the_lock() -> None:
    dev = pins(read("dev.lock"))
    for name, version in pins(read("pins.txt")).items():
        assert dev.get(name) == version, f"requirements/pins.txt pins {name}=={version}; dev.lock has {dev.get(name)}"


@pytest.mark.parametrize("other", ["runtime.lock", "build.lock"])
def test_locks_agree_with_dev_lock(other: str) -> None:
    dev, theirs = pins(read("dev.lock")), pins(read(other))
    if other == "runtime.lock":
        assert set(theirs) <= set(dev), f"runtime.lock holds {sorted(set(theirs) - set(dev))} that dev.lock lacks"
    differ = {n: (v, dev[n]) for n, v in theirs.items() if n in dev and dev[n] != v}
    assert not differ, f"{other} and dev.lock disagree (theirs, dev): {differ}; run: make lock"


@pytest.mark.parametrize("name", ["dev.lock", "runtime.lock", "runtime-cpu.lock", "build.lock", "iabn.lock"])
def test_every_locked_package_has_a_hash(name: str) -> None:
    blocks = re.split(r"(?m)^(?=[A-Za-z0-9_.\-]+==)", read(name))[1:]
    assert blocks, f"{name} pins nothing"
    unhashed = [b.split()[0] for b in blocks if "--hash=sha256:" not in b]
    assert not unhashed, f"{name}: no hash for {unhashed}"
    assert not re.search(r"^--(extra-)?index-url|^--find-links", read(name), flags=re.M), (
        "a lock must not carry one machine's index settings")


def _cpu_lock() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cpu_lock", LOCKS / "cpu_lock.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_image_lock_is_derived_from_runtime_lock() -> None:
    lock, torch_cpu = _cpu_lock().cpu_lock(read("runtime.lock"))
    assert read("runtime-cpu.lock") == lock, "requirements/runtime-cpu.lock is stale; run: make lock"
    assert read("torch-cpu.txt") == torch_cpu, "requirements/torch-cpu.txt is stale; run: make lock"
    cpu, runtime = pins(lock), pins(read("runtime.lock"))
    assert not [n for n in cpu if n.startswith(("nvidia-", "cuda-")) or n in ("triton", "torch", "torchvision")]
    assert all(runtime[n] == v for n, v in cpu.items())
    # what the CPU build of torch needs stays
    assert {"sympy", "networkx", "filelock", "jinja2", "fsspec", "typing-extensions"} <= set(cpu)
    assert pins(torch_cpu) == {"torch": runtime["torch"] + "+cpu", "torchvision": runtime["torchvision"] + "+cpu"}


def test_the_check_fails_on_a_lock_that_disagrees() -> None:
    text = read("dev.lock")
    version = pins(text)["timm"]
    missing = re.sub(r"(?m)^timm==.*$", "", text)
    assert any("timm" in p and "missing" in p for p in lock_problems(["timm>=1.0"], missing, "dev.lock"))
    assert lock_problems([f"timm>{version}"], text, "dev.lock"), "a locked version outside the range is caught"
    assert not lock_problems([f"timm=={version}"], text, "dev.lock")


def test_makefile_installs_only_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    installs = re.findall(r"\$\(PIP\) install [^\n]+", makefile)
    assert installs, "make setup installs with pip"
    for line in installs:
        assert "--require-hashes" in line or "--no-deps --no-build-isolation -e ." in line, line
    setup = makefile.split("\n$(IABN_STAMP):")[0]
    assert "pip-compile" not in setup and "--upgrade" not in setup, "only `make lock` resolves versions"
