"""The cdseg Kubeflow pipeline: a factory per task, compile, local run and submit helpers.

`make_pipeline(task)` builds prepare -> [train(k) -> evaluate(k)] for every step -> report; the step
count is fixed at compile time (KFP cannot loop over a runtime value), everything else is a pipeline
parameter. Compiled YAML for the shipped tasks is checked in under `pipelines/compiled/`.
"""

from pipelines.factory import SHIPPED_TASKS, BuildOptions, make_pipeline

__all__ = ["SHIPPED_TASKS", "BuildOptions", "make_pipeline"]
