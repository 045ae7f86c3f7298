"""The pipelines' `config` run parameter: the options a run rarely changes, in one typed model (imports no kfp).

The KFP run form shows the few parameters people change (source, method, budget, launch mode,
accelerators, workdir, ...) and one `config` dict for the rest. `RunConfig` is its schema, defined
once: the pipelines' `configure` task validates it at the start of a run, the CLI validates it
before submitting, and docs/pipelines.md's table is checked against it (tests/components).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from cdseg.config import Section
from cdseg.errors import ConfigError
from components.settings import DEFAULT_CPU_IMAGE, LAUNCH_MODES

#: a Kubernetes quantity as the API server parses it ("4", "500m", "0.5", "16Gi", "1e3")
_QUANTITY = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+|)$")
#: the keys a Kubernetes toleration may have
TOLERATION_KEYS = frozenset({"key", "operator", "value", "effect", "tolerationSeconds"})


def _quantity(value: str, *, what: str, example: str, empty_ok: bool) -> str:
    value = value.strip()
    if not value and empty_ok:
        return value
    if not _QUANTITY.match(value):
        raise ValueError(f"is not a Kubernetes {what} quantity; use e.g. \"{example}\"")
    return value


class RunConfig(Section):
    """Rarely-changed run options of cdseg's pipelines (the `config` parameter; every key is optional)."""

    prepare_options: dict[str, Any] = Field(
        default_factory=dict, description="other cdseg prepare options as dotted keys, e.g. {\"patch_size\": 512}")
    data_uri: str = Field("", description="where prepare writes the dataset, an s3:// prefix or PVC path "
                                          "(empty: a pipeline artifact)")
    namespace: str = Field("", description="namespace of the training jobs (empty: the run's own)")
    job_cpu: str = Field("", description="CPU request and limit per training job pod, e.g. \"8\" "
                                         "(empty: the launcher's default, 2)")
    job_memory: str = Field("", description="memory request and limit per training job pod, e.g. \"32Gi\" "
                                            "(empty: the launcher's default, 8Gi)")
    job_timeout_s: int = Field(86400, ge=1, description="budget of one training step: the job's deadline and the "
                                                        "wait limit (seconds)")
    pending_timeout_s: int = Field(1800, ge=1, description="fail a step, deleting its job, when its pods have not "
                                                           "started by then (seconds)")
    queue: str = Field("", description="Kueue LocalQueue of the training jobs (empty: none)")
    priority_class: str = Field("", description="PriorityClass (pytorchjob) or Kueue WorkloadPriorityClass "
                                                "(trainjob) of the jobs")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="node labels for the train tasks and their jobs' pods, e.g. "
                                          "{\"nvidia.com/gpu.product\": \"NVIDIA-H100-80GB-HBM3\"}")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="tolerations (Kubernetes objects) for the train tasks and their jobs' pods")
    prepare_cpu: str = Field("4", description="CPU request = limit of the prepare task")
    prepare_memory: str = Field("16Gi", description="memory request = limit of the prepare task")
    train_task_cpu: str = Field("100m", description="CPU request = limit of each train task's own pod (a launcher in "
                                                    "the job modes; raise it for launch_mode=local, e.g. \"8\")")
    train_task_memory: str = Field("256Mi", description="memory request = limit of each train task's own pod "
                                                        "(\"16Gi\" or more for launch_mode=local)")
    train_task_image: str = Field(DEFAULT_CPU_IMAGE, description="image of each train task's own pod: the small CPU "
                                                                 "image for the job modes, the project's image for "
                                                                 "launch_mode=local")
    evaluate_cpu: str = Field("4", description="CPU request = limit of each evaluate task")
    evaluate_memory: str = Field("16Gi", description="memory request = limit of each evaluate task")
    keep_pushed_metrics: bool = Field(False, description="keep the run's Pushgateway groups after the report "
                                                         "(default: the report deletes them)")

    @field_validator("prepare_cpu", "train_task_cpu", "evaluate_cpu", "job_cpu")
    @classmethod
    def _cpu(cls, value: str, info: ValidationInfo) -> str:
        return _quantity(value, what="CPU", example="500m", empty_ok=info.field_name == "job_cpu")

    @field_validator("prepare_memory", "train_task_memory", "evaluate_memory", "job_memory")
    @classmethod
    def _memory(cls, value: str, info: ValidationInfo) -> str:
        return _quantity(value, what="memory", example="16Gi", empty_ok=info.field_name == "job_memory")

    @field_validator("train_task_image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(f"is empty; give an image, e.g. \"{DEFAULT_CPU_IMAGE}\"")
        return value.strip()

    @field_validator("tolerations")
    @classmethod
    def _tolerations(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, item in enumerate(value):
            unknown = sorted(set(item) - TOLERATION_KEYS)
            if unknown:
                raise ValueError(f"item {i} has unknown key(s) {unknown}; a toleration has {sorted(TOLERATION_KEYS)}")
        return value


#: the keys of `config`, in the form's order
CONFIG_KEYS: tuple[str, ...] = tuple(RunConfig.model_fields)


def parse_config(config: dict[str, Any] | None) -> RunConfig:
    """`config` validated; a bad key or value raises ConfigError with one line naming it and the fix."""
    from components.artifacts import flatten_options

    raw = dict(config or {})
    for key in raw:
        if key not in RunConfig.model_fields:
            close = difflib.get_close_matches(str(key), CONFIG_KEYS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"config has an unknown key {key!r}; {hint}known keys: {', '.join(CONFIG_KEYS)} "
                              "(docs/pipelines.md, The config parameter)")
    # KFP's protobuf Struct turns every number into a float: integral ones back to ints
    plain = {k: (flatten_options({"v": v})["v"] if isinstance(v, float) else v) for k, v in raw.items()}
    try:
        return RunConfig.model_validate(plain)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "config"
        value = raw.get(key)
        reason = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"config[{key!r}]={value!r}: {reason} "
                          f"({RunConfig.model_fields[key].description})") from exc


def jobs_namespace(config: dict[str, Any] | None) -> str:
    """`config`'s `namespace`, read without validating the rest: the pipeline's exit task (components.cleanup)
    may depend on no task, so it cannot take the configure task's output. A config the configure task refused
    started no job; its exit task then looks in its own namespace (empty), which is harmless."""
    value = config.get("namespace", "") if isinstance(config, dict) else ""
    return value.strip() if isinstance(value, str) else ""


def check_run(launch_mode: str, accelerator_type: str, accelerator_count: int) -> None:
    """The run parameters the configure task checks besides `config` (one line and the fix when bad)."""
    if launch_mode not in LAUNCH_MODES:
        raise ConfigError(f"launch_mode={launch_mode!r} is not one of {', '.join(LAUNCH_MODES)}")
    if accelerator_count < 0:
        raise ConfigError(f"accelerator_count={accelerator_count} must be >= 0 (0: no accelerator)")
    if accelerator_count > 0 and not accelerator_type.strip():
        raise ConfigError(f"accelerator_count={accelerator_count} needs accelerator_type, e.g. nvidia.com/gpu")
    if accelerator_count > 0 and launch_mode != "local":
        raise ConfigError(f"accelerator_count={accelerator_count} applies to the train task's own pod "
                          f"(launch_mode=local), not to launch_mode={launch_mode}: its jobs take gpus_per_node; "
                          "set accelerator_count=0")


def accelerator_limit(accelerator_type: str, accelerator_count: int) -> tuple[str, str]:
    """(type, count) for the train task's resources: both empty without accelerators, so the KFP backend sets no
    accelerator limit at all (it skips an accelerator whose resolved type is empty)."""
    if accelerator_count <= 0:
        return "", ""
    return accelerator_type.strip(), str(int(accelerator_count))


#: the configure task's outputs, in order (its return annotation spells out the same names and types)
OUTPUTS: tuple[str, ...] = (*CONFIG_KEYS, "accelerator_type", "accelerator_count")


def settings_of(config: dict[str, Any] | None, launch_mode: str, accelerator_type: str,
                accelerator_count: int) -> dict[str, Any]:
    """What the configure task outputs: the validated `config` plus the accelerator limit (see accelerator_limit)."""
    check_run(launch_mode, accelerator_type, accelerator_count)
    cfg = parse_config(config)
    acc_type, acc_count = accelerator_limit(accelerator_type, accelerator_count)
    return {**cfg.model_dump(), "accelerator_type": acc_type, "accelerator_count": acc_count}
