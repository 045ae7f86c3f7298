"""Permission errors of `prepare`, `train` and `test` are one line and exit 2, and leave nothing behind:
an output in a read-only folder, under an existing file, an --output that is a file, an unreadable input.

Root ignores permission bits, so the commands run as an unprivileged user (setpriv, else runuser), all
cases of a test in one process (`main()` once per case) to keep the default tier fast.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from train._util import TINY, cli_args

NOBODY = 65534
_DRIVER = """
import contextlib, io, json, logging, sys
from cdseg.cli.main import main
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(args)
    for handler in list(logging.getLogger().handlers):
        logging.getLogger().removeHandler(handler)
    results.append({"rc": rc, "err": err.getvalue()})
print(json.dumps(results))
"""


def _as_nobody() -> list[str]:
    """The prefix that runs a command as the unprivileged user (nothing when this user is not root)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    pytest.skip("running as root and neither setpriv nor runuser exists to drop privileges: permission bits "
                "would not apply, so these cases cannot be exercised")


@pytest.fixture
def place() -> Iterator[Path]:
    """A folder every user can enter (pytest's own tmp folders are private to their owner), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="cdseg-perm-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _copy(src: Path, dst: Path, *, private: bool = False) -> Path:
    shutil.copytree(src, dst)
    for path in [dst, *dst.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    if private:  # owned by this (root) user, unreadable to others
        dst.chmod(0o700)
    return dst


def _run(place: Path, cases: list[list[str]]) -> list[dict[str, object]]:
    home = place / "home"
    home.mkdir(mode=0o777, exist_ok=True)
    home.chmod(0o777)
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([*_as_nobody(), sys.executable, "-c", _DRIVER, json.dumps(cases)], cwd=place, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def _writable(place: Path) -> Path:
    """A folder the unprivileged user may write in (for the cases whose input is the fault)."""
    folder = place / "writable"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o777)
    return folder


def _layout(place: Path) -> dict[str, Path]:
    """The outputs that cannot be written: a root-owned folder, a file, a path under that file."""
    readonly = place / "readonly"
    readonly.mkdir()
    readonly.chmod(0o755)  # root's: not writable by the unprivileged user
    afile = place / "afile"
    afile.write_text("keep me")
    afile.chmod(0o644)
    return {"read-only folder": readonly / "out", "a file": afile, "under a file": afile / "sub"}


def _snapshot(place: Path) -> dict[str, tuple[int, bytes | None]]:
    return {str(p.relative_to(place)): (p.stat().st_mode, p.read_bytes() if p.is_file() else None)
            for p in sorted(place.rglob("*")) if "home" not in p.relative_to(place).parts}


def _check(results: list[dict[str, object]], names: list[str], command: str, expect: list[str]) -> None:
    for name, result, wanted in zip(names, results, expect, strict=True):
        lines = [line for line in str(result["err"]).splitlines()  # progress logged on the way is not an error
                 if line.strip() and not re.match(r"^\d\d:\d\d:\d\d INFO ", line)]
        assert result["rc"] == 2, (name, result)
        assert len(lines) == 1 and lines[0].startswith(f"cdseg {command}: error: "), (name, lines)
        assert "Traceback" not in str(result["err"]) and wanted in lines[0], (name, wanted, lines)


def _outputs(place: Path) -> list[str]:
    """Every output argument's path that should not exist after a refusal."""
    return sorted(str(p.relative_to(place)) for p in place.rglob("*") if p.name in ("out", "sub", "new"))


def test_prepare(synth_release: Path, prepared_dataset: Path, place: Path) -> None:
    release = _copy(synth_release, place / "release")
    hidden = _copy(synth_release, place / "hidden", private=True)
    one = _copy(synth_release, place / "one-unreadable")
    (one / "4_Ortho_RGBIR" / "top_potsdam_2_10_RGBIR.tif").chmod(0o600)
    owned = _copy(prepared_dataset, place / "owned")
    owned.chmod(0o755)
    place.joinpath("readonly-parent").mkdir()
    shutil.move(str(owned), place / "readonly-parent" / "owned")  # an existing dataset in a root-owned folder
    outputs = _layout(place)
    cases = {**{k: ["--input", str(release), "--output", str(v)] for k, v in outputs.items()},
             "unreadable release": ["--input", str(hidden), "--output", str(_writable(place) / "new")],
             "unreadable image": ["--input", str(one), "--output", str(_writable(place) / "new")],
             "dataset to overwrite in a read-only folder": ["--input", str(release), "--output",
                                                            str(place / "readonly-parent" / "owned"), "--overwrite"]}
    before = _snapshot(place)
    results = _run(place, [["prepare", *args, "--patch-size", "128"] for args in cases.values()])
    _check(results, list(cases), "prepare", ["may not write in", "is a file", "lies under", "may not read",
                                             "may not read", "may not write in"])
    assert _snapshot(place) == before and not _outputs(place)


def test_train(prepared_dataset: Path, place: Path) -> None:
    dataset = _copy(prepared_dataset, place / "dataset")
    hidden = _copy(prepared_dataset, place / "hidden", private=True)
    tile = _copy(prepared_dataset, place / "tile")
    sorted((tile / "images").iterdir())[0].chmod(0o600)
    outputs = _layout(place)
    tiny = {**TINY, "trainer.epochs": 1, "trainer.limit_batches": 1}

    def args(data: Path, output: Path) -> list[str]:
        return ["train", *cli_args({**tiny, "data.dataset": str(data), "output": str(output)}), "--method", "mib"]

    cases = {**{k: args(dataset, v) for k, v in outputs.items()},
             "unreadable dataset": args(hidden, _writable(place) / "new"),
             "unreadable tile": args(tile, _writable(place) / "new")}
    before = _snapshot(place)
    results = _run(place, list(cases.values()))
    _check(results, list(cases), "train", ["may not write in", "is a file", "lies under", "may not read",
                                           "may not read"])
    assert _snapshot(place) == before and not _outputs(place)


def test_test(step0_run: Path, prepared_dataset: Path, place: Path) -> None:
    dataset = _copy(prepared_dataset, place / "dataset")
    model = _copy(step0_run / "step-0" / "model", place / "model")
    hidden_model = _copy(step0_run / "step-0" / "model", place / "hidden-model", private=True)
    hidden = _copy(prepared_dataset, place / "hidden", private=True)
    outputs = _layout(place)

    def args(ckpt: Path, data: Path, output: Path) -> list[str]:
        return ["test", "--checkpoint", str(ckpt), "--dataset", str(data), "--output", str(output),
                "--eval.window", "128", "--eval.overlap", "32"]

    cases = {**{k: args(model, dataset, v) for k, v in outputs.items()},
             "unreadable dataset": args(model, hidden, _writable(place) / "new"),
             "unreadable checkpoint": args(hidden_model, dataset, _writable(place) / "new")}
    before = _snapshot(place)
    results = _run(place, list(cases.values()))
    _check(results, list(cases), "test", ["may not write in", "is a file", "lies under", "may not read",
                                          "may not read"])
    assert _snapshot(place) == before and not _outputs(place)
    assert stat.S_IMODE((place / "afile").stat().st_mode) == 0o644
