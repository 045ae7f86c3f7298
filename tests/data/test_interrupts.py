"""SIGTERM and Ctrl-C stop `prepare --workers 2` cleanly: workers ended, staging folder removed, one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdseg.cli.main import main
from cdseg.utils.processes import session_pids


@pytest.fixture(scope="module")
def big_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scenes large enough that a prepare is still running when the signal arrives."""
    out = tmp_path_factory.mktemp("sig") / "rel"
    assert main(["synth", "--output", str(out), "--size", "1024", "--train-scenes", "4", "--test-scenes", "2",
                 "--products", "RGBIR,labels"]) == 0
    return out


@pytest.mark.parametrize(("how", "code", "line"), [("SIGTERM", 143, "terminated by SIGTERM"),
                                                    ("Ctrl-C", 130, "interrupted")])
def test_signal_stops_workers_and_removes_the_staging_folder(big_release: Path, tmp_path: Path, how: str, code: int,
                                                             line: str) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "cdseg", "prepare", "--input", str(big_release), "--output", str(out),
                             "--patch-size", "128", "--workers", "2"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:  # staging started, forkserver and a worker up
            if list(tmp_path.glob(".out.tmp-*")) and len(session_pids(proc.pid)) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "prepare finished before it could be interrupted"
        if how == "SIGTERM":
            os.kill(proc.pid, signal.SIGTERM)  # what Kubernetes sends to the container's main process
        else:
            os.killpg(proc.pid, signal.SIGINT)  # a terminal sends Ctrl-C to the whole foreground group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == f"cdseg prepare: {line}", err
    deadline = time.monotonic() + 10
    while session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_pids(proc.pid) == []  # no orphaned forkserver, worker or resource tracker
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no staging folder, no lock file
