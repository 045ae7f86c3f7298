"""A method is its term modules and recipes: without PLOP's files, cdseg still imports, lists and trains.

If any other module (the step, the trainer, the config, the CLI) named PLOP's terms, the copy of the
package below, stripped of them, would fail to import or to train. This is the check behind "adding a
method touches only cdseg/losses/, the recipes and tests" (docs/training.md, "Adding a method").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from train._util import cli_args, tiny_cli

import cdseg
from cdseg.train.methods import method_names

#: everything the PLOP change added outside tests (term modules and recipes)
PLOP_FILES = ("losses/pod.py", "losses/pseudo.py", "train/recipes/plop.yaml", "train/recipes/plop-cd.yaml")

_PROBE = """
import json, sys
import cdseg
from cdseg.config import load_config
from cdseg.losses.registry import term_specs
from cdseg.train.config import TrainConfig
from cdseg.train.methods import method_names
cfg = load_config(TrainConfig, cli={"method": "mib-cd"}, environ={})
print(json.dumps({"file": cdseg.__file__, "methods": list(method_names()),
                  "sections": sorted(s.section for s in term_specs()), "config": sorted(cfg.model_dump())}))
"""


def _stripped_package(tmp_path: Path) -> Path:
    root = tmp_path / "stripped"
    shutil.copytree(Path(cdseg.__file__).parent, root / "cdseg", ignore=shutil.ignore_patterns("__pycache__"))
    for rel in PLOP_FILES:
        (root / "cdseg" / rel).unlink()
    return root


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(root)
    return env


def test_plop_lives_only_in_its_own_files(tmp_path: Path, prepared_dataset: Path) -> None:
    root = _stripped_package(tmp_path)
    probe = subprocess.run([sys.executable, "-c", _PROBE], cwd=root, env=_env(root), capture_output=True,
                           text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert Path(seen["file"]).is_relative_to(root)  # the stripped copy was imported, not the checkout
    assert seen["methods"] == [m for m in method_names() if m not in ("plop", "plop-cd")]
    assert "pod" not in seen["sections"] and "pseudo" not in seen["sections"]
    assert "pod" not in seen["config"] and "pseudo" not in seen["config"]
    assert {"ce", "kd", "aug"} <= set(seen["config"])

    # and a method that remains trains (step 0, tiny) through the CLI of the stripped copy
    args = cli_args(tiny_cli(prepared_dataset, tmp_path / "run", method="mib-cd", task__step=0,
                             trainer__epochs=1, trainer__limit_batches=1))
    run = subprocess.run([sys.executable, "-m", "cdseg", "train", *args], cwd=root, env=_env(root),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run" / "step-0" / "model" / "model.safetensors").is_file()
