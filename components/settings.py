"""Defaults shared by the components (no kfp import: component bodies and the CLI read them too)."""

from __future__ import annotations

from cdseg import __version__
from cdseg.launch.backend import BACKEND_NAMES
from cdseg.launch.spec import DEFAULT_IMAGE as _JOB_IMAGE

#: The project's image (docker/Dockerfile): cdseg, its dependencies and kfp baked in, so components
#: compile with `install_kfp_package=False` and nothing is downloaded when a pod starts. Defined once, as the
#: job model's default (`cdseg.launch.spec`; the launcher imports no kubernetes until it talks to a cluster).
DEFAULT_IMAGE = _JOB_IMAGE

#: The small CPU image (docker/Dockerfile.cpu): the train task's own pod in the job launch modes only
#: creates and watches the cluster job, so it needs neither CUDA nor a GPU.
DEFAULT_CPU_IMAGE = f"ghcr.io/cdseg/cdseg-cpu:{__version__}"

#: Pipeline hyper-parameter (dotted TrainConfig key) -> the value that means "the recipe's": a run from the
#: UI's form trains with the method recipe's (and TrainConfig's) settings unless the user types a value.
RECIPE_DEFAULT: dict[str, object] = {
    "trainer.epochs": 0, "trainer.batch_size": 0, "optimizer.lr": 0.0, "trainer.patience": -1,
    "data.crop_size": 0, "in_channels": 0,
}

#: Launch modes of the train component: in its own pod, or as a cluster job of a kind (`auto`: whichever
#: the cluster serves, TrainJob first; see cdseg.launch.backend).
LAUNCH_MODES = ("local", "auto", *BACKEND_NAMES)
