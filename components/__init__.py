"""Kubeflow Pipelines v2 components of cdseg: configure, prepare, train step, evaluate, report, and the exit task
cleanup.

Each is a lightweight Python component, compiled with `install_kfp_package=False` for the project's
image (`components.settings.DEFAULT_IMAGE`), that validates its parameters and calls one cdseg function.

Import them from their subpackages: `from components.prepare import prepare`, `components.configure.configure`,
`components.train.train_step`, `components.evaluate.evaluate`, `components.report.report`,
`components.cleanup.cleanup`. This package does not import them: inside a
running component KFP replaces `kfp.dsl` by its small runtime version, so the helpers the component
bodies import (`components.artifacts`, `components.train.run`, ...) must not pull in the decorated
definitions.
"""

from components.settings import DEFAULT_CPU_IMAGE, DEFAULT_IMAGE, LAUNCH_MODES, RECIPE_DEFAULT

__all__ = ["DEFAULT_CPU_IMAGE", "DEFAULT_IMAGE", "LAUNCH_MODES", "RECIPE_DEFAULT"]
