"""kind end-to-end (opt-in): `CDSEG_KIND=1 pytest -m kind tests/kind` runs tests/kind/run-kind.sh.

Once per backend (Trainer v2 TrainJob, Training Operator v1 PyTorchJob). It needs a Docker engine, kind,
kubectl and network access (operator manifests, base images),
none of which exist on the project's CI machines; elsewhere the test is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("run-kind.sh")


def _why_not() -> str | None:
    if os.environ.get("CDSEG_KIND") != "1":
        return "kind end-to-end is opt-in: set CDSEG_KIND=1 (needs Docker, kind, kubectl, network)"
    missing = [b for b in ("docker", "kind", "kubectl") if shutil.which(b) is None]
    if missing:
        return f"CDSEG_KIND=1 but {', '.join(missing)} not installed"
    return None


@pytest.mark.kind
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("backend", ["trainjob", "pytorchjob"])
def test_one_step_on_kind(backend: str) -> None:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "BACKEND": backend, "CLUSTER": f"cdseg-{backend}"}
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=3500, check=False, env=env)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
    assert "checkpoint ok:" in out.stdout and "kind end-to-end: ok" in out.stdout


def test_script_is_valid_bash() -> None:
    """The script at least parses (it cannot run here)."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    subprocess.run([bash, "-n", str(SCRIPT)], check=True)
