"""An interrupted local pipeline run stops the task process it started (KFP's runner leaves it running)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_pipeline_local import TINY

from cdseg.utils.processes import session_pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


_TREE = """
import json, subprocess, time
from cdseg.utils.processes import descendants, stop_descendants
shell = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300 & wait"])
deadline = time.monotonic() + 10
while len(descendants()) < 3 and time.monotonic() < deadline:  # the shell and its two sleeps
    time.sleep(0.02)
tree = descendants()
stopped = stop_descendants(grace_s=5)
shell.wait(timeout=10)
print(json.dumps({"shell": shell.pid, "tree": tree, "stopped": stopped, "after": descendants()}))
"""


def test_descendants_are_found_and_stopped() -> None:
    # in a process of its own: stopping the test process's descendants would stop the suite's servers too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", _TREE], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(seen["tree"]) == 3 and seen["tree"][0] == seen["shell"]  # parents before children
    assert set(seen["tree"]) <= set(seen["stopped"]) and seen["after"] == []


def test_sigterm_to_a_local_pipeline_run_leaves_no_task_running(synth_release: Path, tmp_path: Path) -> None:
    params = {k: v for k, v in TINY.items()}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "cdseg", "pipeline", "run", "--task", "222a", "--source",
                             str(synth_release), "--method", "ft", "--params", json.dumps(params), "--output",
                             str(tmp_path / "run"), "--no-caching", "--local"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        task = None
        while task is None and time.monotonic() < deadline and proc.poll() is None:
            task = next((p for p in session_pids(proc.pid) if "kfp.dsl.executor_main" in _cmdline(p)), None)
            time.sleep(0.05)
        assert task is not None, "no pipeline task started"
        os.kill(proc.pid, signal.SIGTERM)  # what Kubernetes (or a user's kill) sends to the main process
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    deadline = time.monotonic() + 20
    while session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [_cmdline(p)[:120] for p in session_pids(proc.pid)]
    assert left == [], f"processes left running: {left}"
