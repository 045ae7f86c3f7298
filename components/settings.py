"""Defaults shared by the components (no kfp import: component bodies and the CLI read them too)."""

from __future__ import annotations

from cdseg import __version__

#: The project's image (docker/Dockerfile): cdseg, its dependencies and kfp baked in, so components
#: compile with `install_kfp_package=False` and nothing is downloaded when a pod starts.
DEFAULT_IMAGE = f"ghcr.io/cdseg/cdseg:{__version__}"

#: Launch modes of the train component: in its own pod, or as a cluster job of a kind (`auto`: whichever
#: the cluster serves, TrainJob first; see cdseg.launch.backend).
LAUNCH_MODES = ("local", "auto", "trainjob", "pytorchjob")
