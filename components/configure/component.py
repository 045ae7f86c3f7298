"""Configure component: the first task of a run validates `config` and hands each option to the tasks that use it."""

from typing import NamedTuple

from kfp import dsl

from components.settings import DEFAULT_IMAGE


# the outputs (components.run_config.OUTPUTS, spelled out: KFP copies only this function's source into the pod)
@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def configure(
    config: dict = {},  # noqa: B006 (KFP needs a literal default)
    launch_mode: str = "auto",
    accelerator_type: str = "",
    accelerator_count: int = 0,
) -> NamedTuple("Settings", [  # type: ignore[valid-type]  # noqa: UP014 (the form KFP reads)
    ("prepare_options", dict), ("data_uri", str), ("namespace", str), ("job_cpu", str), ("job_memory", str),
    ("job_timeout_s", int), ("pending_timeout_s", int), ("queue", str), ("priority_class", str),
    ("node_selector", dict), ("tolerations", list), ("prepare_cpu", str), ("prepare_memory", str),
    ("train_task_cpu", str), ("train_task_memory", str), ("train_task_image", str), ("evaluate_cpu", str),
    ("evaluate_memory", str), ("keep_pushed_metrics", bool), ("accelerator_type", str), ("accelerator_count", str),
]):
    """Validate the run's `config` (and launch mode and accelerators) before anything else runs.

    A bad key or value fails this task with one line naming it and the fix (exit code 2); nothing else
    starts. The outputs are the validated options; `accelerator_type` and `accelerator_count` are both
    empty without accelerators (count 0), so the train tasks' pods then get no accelerator limit.

    Args:
        config: the rarely-changed options (components.run_config.RunConfig; docs/pipelines.md lists them).
        launch_mode: the run's launch mode (auto, trainjob, pytorchjob or local).
        accelerator_type: accelerator resource of the train tasks' own pods, e.g. nvidia.com/gpu.
        accelerator_count: accelerators per train task pod (launch_mode=local; 0: none).
    """
    import sys
    from collections import namedtuple

    from cdseg.errors import ConfigError
    from components.run_config import OUTPUTS, settings_of

    try:
        values = settings_of(config, launch_mode, accelerator_type, int(accelerator_count))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    print("run configuration: " + ", ".join(f"{k}={values[k]!r}" for k in OUTPUTS), flush=True)
    return namedtuple("Settings", OUTPUTS)(**values)
