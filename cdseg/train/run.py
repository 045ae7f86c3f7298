"""`run_train(cfg)`: build everything one step needs, train it, write `<output>/step-<k>/`.

Output layout (rank 0 writes; remote outputs are written locally and uploaded, see `output.py`):

    <output>/step-<k>/model/{model.safetensors, model.json}   the step's model (best validated, or last)
    <output>/step-<k>/best/                                   best validated weights so far
    <output>/step-<k>/resume/it-<iteration>/                  newest resume state (weights + state.pt)
    <output>/step-<k>/config.yaml                             the resolved config
    <output>/step-<k>/history.json                            one record per epoch (train terms, lr, val scores)

A restarted process (PyTorchJob pod restart, kill -9) finds the newest complete `resume/it-*` and goes
on from there; a finished step (model/ written, budget spent) returns at once.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from typing import Any

import torch
from torch import nn

from cdseg import storage as store
from cdseg.errors import CheckpointError, ConfigError, UserError
from cdseg.train import distributed as D
from cdseg.train.checkpoint import (
    check_previous,
    check_resume_config,
    latest_resume,
    load_state,
    resume_fingerprint,
)
from cdseg.train.config import TrainConfig
from cdseg.train.data import (
    GlobalBatchSampler,
    OnDevice,
    augment_on_device,
    build_datasets,
    select_bands,
    train_loader,
    val_loader,
)
from cdseg.train.output import StepOutput
from cdseg.train.schedule import build_scheduler
from cdseg.train.step import MethodStep
from cdseg.train.trainer import Trainer
from cdseg.utils.lease import OutputBusy, output_lease, remove_stale

log = logging.getLogger("cdseg.train")


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf before any weights worth keeping existed (exit 1)."""


def run_train(cfg: TrainConfig) -> str:
    """Train one incremental step (single process or one rank of torchrun) and return the model folder URI."""
    owned = not D.is_initialized()
    info = D.init_distributed(cfg.trainer.device)
    try:
        return _run_owned(cfg, info)
    finally:
        if owned:
            D.destroy()


def _card(cfg: TrainConfig, task: Any, step: int) -> Any:
    steps = [list(s) for s in task.steps[:step + 1]]

    def card(extra: dict[str, Any]) -> dict[str, Any]:
        return {"task": task.name, "step": step, "classes": steps, "class_names": task.class_names(step),
                "method": cfg.method, "name": cfg.name, "comment": cfg.comment, "seed": cfg.seed,
                "dataset": cfg.data.dataset, **extra}

    return card


def _load_previous(cfg: TrainConfig, task: Any, bands: list[str],
                   student: nn.Module) -> tuple[nn.Module, str, dict[str, Any]]:
    from cdseg.models.io import load_model

    step = cfg.task.step
    uri = cfg.prev_checkpoint or store.join(cfg.output, f"step-{step - 1}", "model")
    teacher, card = load_model(uri, "cpu")
    check_previous(card, uri, task=task.name, step=step, steps=[list(s) for s in task.steps], bands=bands)
    return teacher, uri, card


def _run_owned(cfg: TrainConfig, info: D.DistInfo) -> str:
    """`_train` while rank 0 holds the lease of the step's local folder (a second run is refused at once)."""
    out = StepOutput(cfg.output, cfg.task.step)
    with contextlib.ExitStack() as lease:
        busy: UserError | None = None
        if info.is_main:
            try:
                if not out.remote:  # a file, under a file, or not writable: one line now, not a traceback later
                    store.check_output(cfg.output, inside=True)
                    store.check_output(out.local)
                lease.enter_context(output_lease(out.local, "output"))
                if out.remote:  # the bucket prefix too: pods on other nodes share it, not the local work folder
                    store.configure(cfg.storage)
                    lease.enter_context(store.remote_lease(out.uri, "output"))
            except UserError as exc:
                busy = exc
        held = D.same_on_all_ranks(0 if busy else 1, info)
        if busy is not None:
            raise busy
        if not held:
            raise OutputBusy(f"rank 0 could not take the lease of {out.uri}; see rank 0's error")
        if info.is_main:  # temporaries of a killed run of this step; `eval/` is `cdseg test`'s, under its own lease
            for piece in ("best", "model", "history.json", "config.yaml", "resume"):
                remove_stale(out.local / piece)
        return _train(cfg, info)


def _train(cfg: TrainConfig, info: D.DistInfo) -> str:
    from cdseg.data.prepared import PreparedDataset
    from cdseg.losses.registry import build_terms
    from cdseg.losses.term import StepInfo
    from cdseg.models import build_segmenter, init_new_head_mib, load_previous_into

    t = cfg.trainer
    store.configure(cfg.storage)
    if t.amp and info.device.type != "cuda":
        log.warning("--trainer.amp is ignored on %s (autocast needs CUDA here); training in float32", info.device)
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if not t.cd_single_forward and info.distributed:
        raise ConfigError("--trainer.cd-single-forward false needs a single process (two forwards of a DDP model per "
                          "backward are not allowed); keep it true under torchrun")
    step = cfg.task.step
    out = StepOutput(cfg.output, step)
    final_uri = out.uri_of("model")
    uses_teacher = step > 0 and TrainConfig.uses_previous_checkpoint(cfg.method)

    prepared = PreparedDataset.open(cfg.data.dataset)
    task = cfg.task.task(prepared.manifest)  # classes and tasks come from the prepared dataset
    prepared.check(full=cfg.data.verify)  # a damaged file is one line naming it, never training on bad pixels
    bands = select_bands(cfg, prepared.bands)
    on_device = augment_on_device(cfg.data.augment_on, info.device)
    train_ds, val_ds = build_datasets(cfg, task, prepared, bands, on_device)
    augment = None
    if on_device:
        from cdseg.data.split_augment import AugmentOnDevice, AugmentSpec

        augment = AugmentOnDevice(AugmentSpec.from_data_config(cfg.data))
        log.info("training augmentation: random draws and uint8 crops in the loader, pixel work on %s", info.device)
    stats = train_ds.stats

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    student = build_segmenter(cfg.model, task.heads(step), bands, stats)
    teacher = None
    if uses_teacher:
        teacher, prev_uri, prev_card = _load_previous(cfg, task, bands, student)
    if t.resume and info.local_rank == 0:
        out.fetch_resume()  # remote outputs: one download per node
    if info.is_main and out.resume_root.is_dir():
        if not t.resume:  # start over: an older, longer run's states would otherwise look newer than ours
            shutil.rmtree(out.resume_root)
        else:
            for stale in out.resume_root.glob(".it-*"):  # temporaries of a process killed while writing
                shutil.rmtree(stale, ignore_errors=True)
    D.barrier(info)
    resume_dir = latest_resume(out.resume_root) if t.resume else None
    found = int(resume_dir.name.removeprefix("it-")) if resume_dir is not None else -1
    if not D.same_on_all_ranks(found, info):
        raise CheckpointError(f"ranks see different resume states in {out.uri}/resume (rank {info.rank}: "
                              f"{resume_dir}); a local --output must be on storage shared by every node, or use s3://")
    if resume_dir is None and info.is_main and out.path("best").is_dir():
        shutil.rmtree(out.path("best"))  # a fresh start: an older run's best must never become this run's model
    state = None
    if resume_dir is not None:
        from cdseg.models.io import load_state as load_weights

        state = load_state(resume_dir)
        check_resume_config(state.get("config"), resume_fingerprint(cfg.model_dump(mode="json")), resume_dir,
                            defaults=resume_fingerprint(TrainConfig.model_validate({}).model_dump(mode="json")))
        weights, _ = load_weights(str(resume_dir / "model"))
        student.load_state_dict(weights)
    elif teacher is not None:
        load_previous_into(student, teacher.state_dict())
        if t.init_balanced:
            init_new_head_mib(student)
        log.info("step %d starts from %s%s", step, prev_uri, " (MiB head init)" if t.init_balanced else "")

    channels_last = t.channels_last == "on" or (t.channels_last == "auto" and info.device.type == "cuda")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    student = student.to(info.device).to(memory_format=fmt)
    if teacher is not None:
        teacher = teacher.to(info.device).to(memory_format=fmt).eval().requires_grad_(False)
    student = D.convert_sync_norms(student, cfg.model.norm, info)  # type: ignore[assignment]
    wrapped: nn.Module = D.wrap_ddp(student, info)
    if t.compile:
        wrapped = torch.compile(wrapped)  # type: ignore[assignment]
        if teacher is not None:
            teacher = torch.compile(teacher)  # type: ignore[assignment]

    sampler = GlobalBatchSampler(len(train_ds), t.batch_size, info.rank, info.world_size, cfg.seed, t.limit_batches)
    pin = info.device.type == "cuda"
    loader = train_loader(train_ds, sampler, cfg.seed, cfg.data.workers, pin)
    vloader = val_loader(val_ds, t.batch_size, info.rank, info.world_size, cfg.data.workers, pin)
    per_epoch = sampler.iters
    max_iters = t.iters_at(step)
    total = per_epoch * t.epochs if not max_iters else min(max_iters, per_epoch * t.epochs)

    optimizer = _optimizer(cfg, student)
    scheduler = build_scheduler(optimizer, cfg.scheduler, total, per_epoch)
    fp16 = t.amp and t.amp_dtype == "fp16" and info.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if fp16 else None

    old_count = sum(task.heads(step - 1)) if uses_teacher else 0
    step_info = StepInfo(step=step, old_classes=old_count, num_outputs=task.num_outputs(step),
                         has_teacher=teacher is not None, seed=cfg.seed)
    terms = [term.to(info.device) for term in build_terms(cfg, step_info)]
    method = MethodStep(wrapped, teacher, terms, cfg.aug, cfg.seed, t.cd_single_forward)
    if teacher is not None:
        from cdseg.models.io import load_extra

        carried = load_extra(prev_uri, "terms", prev_card)
        if carried:
            method.load_carried({k: v.to(info.device) for k, v in carried.items()})
    if resume_dir is not None:
        from cdseg.models.io import load_extra

        kept = load_extra(str(resume_dir / "model"), "terms")
        if kept:
            method.load_state_tensors({k: v.to(info.device) for k, v in kept.items()})
    log.info("method %s: terms %s%s", cfg.method, ", ".join(type(term).__name__ for term in terms),
             "; frozen teacher forward once per batch" if method.needs_teacher_forward else "")

    num_classes = task.num_outputs(step)
    # old / new as the task defines them, for every method (ft and joint too): outputs 1.. of the classes
    # learned before this step, then this step's. Background (output 0) is neither.
    seen_before = sum(task.heads(step - 1)) if step > 0 else 1
    old_idx = list(range(1, seen_before))
    new_idx = list(range(seen_before, num_classes))
    sink = _sink(cfg, info, task.name, step)
    trainer = Trainer(cfg, info, method, student, optimizer, scheduler, scaler, loader, sampler, vloader,
                      num_classes, old_idx, new_idx, out, _card(cfg, task, step), total, sink, augment)
    if state is not None:
        trainer.load_state_dict(state)
    sampler.set_epoch(0, 0)
    if method.calibrate(OnDevice(loader, info.device, augment), info.device, lambda t: D.all_reduce_sum(t, info)):
        log.info("measured the terms' per-class statistics on the training data with the previous model")
    file_log = None
    if info.is_main:
        from cdseg.config import save_config

        out.local.mkdir(parents=True, exist_ok=True)
        file_log = _file_log(out)
        save_config(cfg, out.path("config.yaml"))
        out.publish("config.yaml")
        log.info("training %s step %d (%s) on %s x%d: %d images, %d iterations/epoch, %d iterations at most; output %s",
                 task.name, step, cfg.method, info.device, info.world_size, len(train_ds), per_epoch, total, out.uri)
    try:
        trainer.fit()
        if "not finite" in trainer.stopper.reason and trainer.stopper.best_score is None:  # same on every rank
            raise TrainingDiverged(f"step {step} diverged before any validation ({trainer.stopper.reason}); lower "
                                   "--optimizer.lr, add --scheduler.warmup-iters or --trainer.grad-clip")
        if info.is_main:
            _finish(cfg, trainer, student, out, method.carry_state())
        D.barrier(info)
    finally:
        if sink is not None:
            sink.close()
        if file_log is not None:
            logging.getLogger("cdseg").removeHandler(file_log)
            file_log.close()
            with contextlib.suppress(Exception):
                out.publish("train.log")
    return final_uri


def _file_log(out: StepOutput) -> logging.Handler:
    """Append this process's cdseg log lines to <step>/train.log (rank 0; restarts append)."""
    handler = logging.FileHandler(out.path("train.log"), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger("cdseg").addHandler(handler)
    return handler


def _finish(cfg: TrainConfig, trainer: Trainer, student: nn.Module, out: StepOutput,
            carry: dict[str, torch.Tensor] | None = None) -> None:
    """Write model/: the best validated weights when --trainer.restore-best and a best exists, else the last."""
    from cdseg.models.io import load_state as load_weights
    from cdseg.models.io import save_model

    stopper = trainer.stopper
    best = out.path("best")
    has_best = (best / "model.safetensors").is_file()
    extra: dict[str, Any] = {"epoch": trainer.progress.epoch - 1, "iteration": trainer.progress.iteration,
                             "stopped": stopper.reason or "budget", "history": "history.json"}
    if cfg.trainer.restore_best and has_best:
        weights, card = load_weights(str(best))
        student.load_state_dict(weights)  # really restores (the original kept a live reference: bug 4)
        extra.update(epoch=card.get("epoch"), metric=card.get("metric"), selected="best")
    else:
        extra.update(selected="last", metric={cfg.trainer.monitor: stopper.best_score} if stopper.best_score is not None else None)
    save_model(student, str(out.path("model")), trainer.card(extra), replace=True,  # type: ignore[arg-type]
               extra={"terms": carry or {}})
    out.publish("model")
    log.info("step %d model (%s, epoch %s) written to %s", cfg.task.step, extra["selected"], extra["epoch"],
             out.uri_of("model"))


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if o.target == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas)
    if o.target == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas)
    return torch.optim.SGD(params, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum)


def _sink(cfg: TrainConfig, info: D.DistInfo, task: str, step: int) -> Any:
    from cdseg.metrics import open_sink

    labels = {"task": task, "step": step, "rank": info.rank, "method": cfg.method}
    # the sink itself serves on port + LOCAL_RANK (one /metrics per rank on a node, as the PodMonitor expects)
    return open_sink(cfg.metrics, labels)
