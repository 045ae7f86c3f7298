"""What the train-step component does, by launch mode (imports no kfp; runs inside the component's pod).

`local`: the step runs in this process (`cdseg.train.run_train`), or under `torchrun` with `nproc`
processes; the checkpoint is copied into the `Model` artifact.

`auto`, `trainjob`, `pytorchjob`: the step runs as a cluster job (`cdseg.launch`: a Trainer v2 TrainJob
or a legacy PyTorchJob; `auto` picks whichever the cluster serves). The job's pods never see this pod's
filesystem: the dataset and the previous checkpoint are read from shared storage (`workdir`: an s3://
prefix or a PVC path mounted in both), uploaded there first when they are only local artifacts, and
the job writes its checkpoint under `workdir`; it is then copied into the `Model` artifact, whose
metadata also records the shared URI.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdseg.errors import ConfigError
from components import artifacts
from components.settings import LAUNCH_MODES, RECIPE_DEFAULT

log = logging.getLogger("cdseg.components.train")

#: TrainConfig options the component sets itself (from its own parameters and artifacts)
RESERVED = ("task.name", "task.step", "method", "data.dataset", "output", "prev_checkpoint")


@dataclass
class TrainRequest:
    """The train component's parameters, validated: the step's own, and `job`, the cluster job's settings by their
    `cdseg.launch.JobSpec` field names (an empty string: the model's default)."""

    task: str
    step: int
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    launch_mode: str = "local"
    workdir: str = ""
    run_id: str = ""
    api_host: str = ""
    num_workers: int = 0       # the job's replicas - 1 (KFP cannot add one to a pipeline parameter)
    timeout: int = 86400       # the step's budget: the job's activeDeadlineSeconds and the launcher's wait limit
    pending_timeout: int = 1800
    job: dict[str, Any] = field(default_factory=dict)

    @property
    def as_job(self) -> bool:
        """Whether the step runs as a cluster job (any mode but `local`)."""
        return self.launch_mode != "local"

    @property
    def nproc(self) -> int:
        """Training processes per node (local torchrun, or the job's `nproc_per_node`)."""
        return int(self.job.get("nproc_per_node", 1))

    def __post_init__(self) -> None:
        from cdseg.launch import JobSpec

        self.step, self.num_workers = int(self.step), int(self.num_workers)
        self.timeout, self.pending_timeout = int(self.timeout), int(self.pending_timeout)
        unknown = sorted(set(self.job) - set(JobSpec.model_fields))
        if unknown:
            raise ConfigError(f"train: job settings {unknown} are not JobSpec fields; use the names of "
                              "`cdseg launch --help`")
        # KFP's protobuf Struct turns integers into floats; empty strings mean "the model's default"
        self.job = {k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in self.job.items()
                    if v != ""}
        self.options = artifacts.flatten_options(self.options)
        # a hyper-parameter left at its "recipe's" value (0, or -1 for patience) is not passed: the method
        # recipe and TrainConfig decide it, as for `cdseg train` without the option
        self.hparams = {k: v for k, v in artifacts.flatten_options(self.hparams).items()
                        if not (k in RECIPE_DEFAULT and _same_number(v, RECIPE_DEFAULT[k]))}
        if self.launch_mode not in LAUNCH_MODES:
            raise ConfigError(f"train: launch_mode={self.launch_mode!r} is not one of {', '.join(LAUNCH_MODES)}")
        if self.step < 0:
            raise ConfigError(f"train: step={self.step} must be >= 0")
        if self.nproc < 1:
            raise ConfigError(f"train: nproc_per_node={self.nproc} must be >= 1")
        if self.num_workers < 0 or self.timeout <= 0 or self.pending_timeout <= 0:
            raise ConfigError("train: num_workers must be >= 0, timeout and pending_timeout > 0")
        taken = sorted((set(self.options) | set(self.hparams)) & set(RESERVED))
        if taken:
            raise ConfigError(f"train: options {taken} are set by the component from its parameters and "
                              f"artifacts; remove them from options")
        if self.as_job and not self.workdir:
            raise ConfigError(f"train: launch_mode={self.launch_mode} needs workdir, shared storage the job's pods can "
                              "reach (an s3:// prefix, or a PVC path mounted in the job's pods); set the pipeline's "
                              "workdir")
        if not self.run_id or "{{" in self.run_id:  # a placeholder the runner did not resolve
            self.run_id = uuid.uuid4().hex[:12]


def _same_number(value: Any, unset: object) -> bool:
    try:
        return float(value) == float(unset)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def train_config(req: TrainRequest, data_uri: str, prev_uri: str | None, output: str) -> Any:
    """The step's validated TrainConfig: the method recipe < options < what the component sets."""
    from cdseg.config import load_config
    from cdseg.train.config import TrainConfig

    cli = artifacts.typed_options(TrainConfig, {**req.hparams, **req.options})
    cli.update({"task.name": req.task, "task.step": req.step, "method": req.method, "data.dataset": data_uri,
                "output": output})
    # A pipeline chains every method's steps the same way; joint's step k trains from scratch, so the
    # edge from step k-1 only orders the steps and its checkpoint is not passed on.
    if prev_uri and TrainConfig.uses_previous_checkpoint(req.method):
        cli["prev_checkpoint"] = prev_uri
    return load_config(TrainConfig, cli=cli)


def check_previous(req: TrainRequest, prev_model: Any) -> None:
    """Step 0 takes no previous checkpoint; step k > 0 needs one."""
    if req.step == 0 and prev_model is not None:
        raise ConfigError("train: step 0 takes no prev_model; remove the edge or train a later step")
    if req.step > 0 and prev_model is None:
        raise ConfigError(f"train: step {req.step} needs prev_model, the checkpoint of step {req.step - 1}")


def run_train_step(req: TrainRequest, *, data: Any, prev_model: Any, model: Any) -> str:
    """Train the step by `req.launch_mode`; fill the `Model` artifact; return the checkpoint's URI."""
    check_previous(req, prev_model)
    if req.as_job:
        from components.train.job import run_as_job

        uri = run_as_job(req, data=data, prev_model=prev_model)
        artifacts.copy_into(uri, model.path)
        model.metadata[artifacts.LOCATION_KEY] = uri
    else:
        work = tempfile.mkdtemp(prefix=f"cdseg-train-{req.step}-")
        try:
            prev_uri = artifacts.location(prev_model) if prev_model is not None else None
            cfg = train_config(req, artifacts.location(data), prev_uri, work)
            artifacts.copy_into(run_local(cfg, req.nproc), model.path)
            uri = model.path  # the work folder goes away; the artifact is where the checkpoint now lives
        finally:
            shutil.rmtree(work, ignore_errors=True)
    card = artifacts.read_card(model.path)
    model.metadata.update(artifacts.model_metadata(card, req.method))
    model.metadata.setdefault("task", req.task)
    model.metadata.setdefault("step", req.step)
    log.info("step %d of %s (%s) trained: %s", req.step, req.task, req.method, uri)
    return str(uri)


def run_local(cfg: Any, nproc: int) -> str:
    """Run the step here (nproc == 1) or under torchrun with nproc processes; the checkpoint's URI."""
    from cdseg.train import run_train

    if nproc == 1:
        return str(run_train(cfg))
    from cdseg.config import save_config
    from cdseg.storage import join

    cfg_path = Path(tempfile.mkdtemp(prefix="cdseg-train-cfg-")) / "train.yaml"
    save_config(cfg, cfg_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "cdseg", "train", "--config", str(cfg_path)]
    log.info("running %s", " ".join(cmd))
    try:
        rc = subprocess.call(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    finally:
        shutil.rmtree(cfg_path.parent, ignore_errors=True)
    if rc != 0:
        raise RuntimeError(f"torchrun with {nproc} processes exited with code {rc}; see the log above")
    return str(join(cfg.output, f"step-{cfg.task.step}", "model"))
