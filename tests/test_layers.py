"""The layering of DESIGN.md, enforced: imports point down, heavy dependencies live in one place each."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: third-party module -> the only places (path prefixes, relative to the repo root) allowed to import it
ONLY_IN: dict[str, tuple[str, ...]] = {
    "boto3": ("cdseg/storage/s3.py", "cdseg/bench/storage.py"),  # the bench's plain-boto3 baseline
    "botocore": ("cdseg/storage/s3.py", "cdseg/bench/storage.py"),
    "kubernetes": ("cdseg/launch/",),
    "kfp": ("components/", "pipelines/"),
    "prometheus_client": ("cdseg/metrics/",),
    "inplace_abn": ("cdseg/models/norm.py",),
    # the trainer owns torch.distributed; torchrun.py wraps torch.distributed.run to pass a rank's exit code on
    "torch.distributed": ("cdseg/train/distributed.py", "cdseg/train/torchrun.py"),
}

#: lower layers must never import these higher ones
LOWER = ("cdseg/models/", "cdseg/losses/", "cdseg/data/", "cdseg/tasks/", "cdseg/storage/", "cdseg/metrics/",
         "cdseg/config/", "cdseg/utils/", "cdseg/errors.py")
HIGHER = ("cdseg.train", "cdseg.evaluate", "cdseg.report", "cdseg.bench", "cdseg.launch", "cdseg.cli", "cdseg.demo",
          "cdseg.experiment", "components", "pipelines")
LEAVES = ("cdseg/storage/", "cdseg/metrics/", "cdseg/config/", "cdseg/utils/", "cdseg/errors.py")
MIDDLE = ("cdseg.models", "cdseg.losses", "cdseg.data", "cdseg.tasks")


def _sources() -> list[Path]:
    files = []
    for top in ("cdseg", "components", "pipelines"):
        files += sorted((ROOT / top).rglob("*.py"))
    return files


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def _matches(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


@pytest.mark.parametrize("module", sorted(ONLY_IN))
def test_heavy_dependency_imported_in_one_place(module: str) -> None:
    offenders = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(ONLY_IN[module]):
            continue
        if any(_matches(n, module) for n in _imports(path)):
            offenders.append(rel)
    assert not offenders, f"{module} may only be imported in {ONLY_IN[module]}; found in {offenders}"


def test_imports_point_down() -> None:
    offenders = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        forbidden = HIGHER if rel.startswith(LOWER) else ()
        if rel.startswith(LEAVES):
            forbidden = forbidden + MIDDLE
        for name in _imports(path):
            if any(_matches(name, f) for f in forbidden):
                offenders.append(f"{rel} imports {name}")
    assert not offenders, "layering violations (see docs/architecture.md, Packages and layers):\n" + "\n".join(offenders)


@pytest.mark.parametrize(("package", "other"), [("cdseg/data/", "cdseg.tasks"), ("cdseg/tasks/", "cdseg.data")])
def test_data_and_tasks_are_independent(package: str, other: str) -> None:
    """Classes and tasks travel in the prepared manifest: neither package imports the other."""
    offenders = [f"{p.relative_to(ROOT).as_posix()} imports {n}" for p in _sources()
                 if p.relative_to(ROOT).as_posix().startswith(package) for n in _imports(p) if _matches(n, other)]
    assert not offenders, "\n".join(offenders)


def test_scan_sees_the_package() -> None:
    # guards the two tests above against passing vacuously
    assert any(p.name == "main.py" for p in _sources())
    assert "cdseg.errors" in _imports(ROOT / "cdseg" / "cli" / "main.py")


def test_import_linter_contracts() -> None:
    """The same architecture as import-linter contracts (.importlinter), on the real import graph."""
    import shutil
    import subprocess

    exe = shutil.which("lint-imports") or str(Path(__import__("sys").executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([exe, "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_no_class_name_outside_the_dataset_definitions() -> None:
    """A dataset's classes are named in cdseg/data/ only; everything else reads them from the manifest.

    `background` is exempt: it is also MiB's name for output 0 of a dataset that has no background class.
    """
    from cdseg.data.source import DATASETS, definition_fields

    names = {c for d in DATASETS for c in definition_fields(d)["classes"]} - {"background"}
    offenders = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("cdseg/data/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                offenders.append(f"{rel}:{node.lineno} {node.value!r}")
    assert not offenders, "class names outside cdseg/data/ (read them from the manifest):\n" + "\n".join(offenders)
