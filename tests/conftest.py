"""Shared fixtures: a tiny generated Potsdam release and its prepared dataset (built once per session).

- `synth_release`: Path of a generated Potsdam release in the real layout (extracted folders):
  4 training scenes (2_10, 3_10, 3_11, 3_12) and 2 test scenes (2_13, 2_14), 256x256 px, all products.
- `prepared_dataset`: Path of that release prepared with patch size 128, no overlap, RGBIR, no DSM:
  splits train 3 scenes / val 1 scene / test 2 scenes, 4 patches per scene.
Treat both as read-only; copy them (shutil.copytree) to modify.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

SYNTH_SIZE = 256
PATCH_SIZE = 128


@pytest.fixture(scope="session")
def synth_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated Potsdam release (folders), 4 train + 2 test scenes of 256 px."""
    from cdseg.data.config import SynthConfig
    from cdseg.data.synth_release import run_synth

    out = tmp_path_factory.mktemp("synth") / "potsdam"
    run_synth(SynthConfig(output=str(out), size=SYNTH_SIZE, train_scenes=4, test_scenes=2, seed=0))
    return out


@pytest.fixture(scope="session")
def prepared_dataset(synth_release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`synth_release` prepared: 128 px patches, no overlap, RGBIR bands, 1 validation scene."""
    from cdseg.data.config import PrepareConfig
    from cdseg.data.prepare import run_prepare

    out = tmp_path_factory.mktemp("prepared") / "potsdam"
    run_prepare(PrepareConfig(input=str(synth_release), output=str(out), patch_size=PATCH_SIZE, overlap=0,
                              val_count=1, seed=0))
    return out
