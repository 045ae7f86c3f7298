"""The loop of one step: epochs of iterations, reports, validation, early stopping, checkpoints.

Reads top to bottom: `fit` -> per epoch `_train_epoch` -> `_validate` -> `_save_resume`. Losses are
accumulated on the device and synchronised only at the log interval (one all-reduce per interval).
Every iteration reseeds the torch RNG from (seed, rank, iteration), so dropout and every other draw
are a function of the iteration: a process restarted from any resume state continues bitwise like
the uninterrupted run (on CPU; CUDA kernels may be non-deterministic unless --trainer.deterministic).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cdseg.train import distributed as D
from cdseg.train.checkpoint import resume_fingerprint, rng_state, save_resume
from cdseg.train.config import TrainConfig
from cdseg.train.data import GlobalBatchSampler, batch_to_device, mix_seed
from cdseg.train.early_stop import EarlyStopping
from cdseg.train.output import StepOutput
from cdseg.train.step import MethodStep
from cdseg.train.validate import evaluate, scores
from cdseg.utils.atomic import write_text_atomic

log = logging.getLogger("cdseg.train")


def strict_json(value: Any) -> Any:
    """`value` with NaN and infinities as None (null): JSON has no NaN, and strict parsers reject it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


@dataclass
class Progress:
    """Where the run is: epoch in progress, iterations done in it and in total, per-epoch history."""

    epoch: int = 0
    iter_in_epoch: int = 0
    iteration: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_count: int = 0


class Trainer:
    """Runs `fit()`; everything it needs is built by `cdseg.train.run`."""

    def __init__(self, cfg: TrainConfig, info: D.DistInfo, step: MethodStep, model: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, loader: Any,
                 sampler: GlobalBatchSampler, val_loader: Any, num_classes: int, old: list[int], new: list[int],
                 out: StepOutput, card: Callable[[dict[str, Any]], dict[str, Any]], total_iters: int,
                 sink: Any = None, augment: Any = None) -> None:
        self.cfg, self.t, self.info = cfg, cfg.trainer, info
        self.augment = augment  # the device part of the split augmentation (--data.augment-on device), or None
        self.step, self.model = step, model
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.loader, self.sampler, self.val_loader = loader, sampler, val_loader
        self.num_classes, self.old, self.new = num_classes, old, new
        self.out, self.card, self.total_iters, self.sink = out, card, total_iters, sink
        if sink is not None:
            sink.set_total(total_iters)
        self.progress = Progress()
        mode = "min" if self.t.monitor == "loss" else "max"
        self.stopper = EarlyStopping(mode=mode, patience=self.t.patience, min_delta=self.t.min_delta)
        amp = self.t.amp and info.device.type == "cuda"
        dtype = torch.bfloat16 if self.t.amp_dtype == "bf16" else torch.float16
        self.autocast: Callable[[], Any] = (
            (lambda: torch.autocast("cuda", dtype=dtype)) if amp else contextlib.nullcontext)
        self.channels_last = self.t.channels_last == "on" or (self.t.channels_last == "auto" and info.device.type == "cuda")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Resume state (tensors and plain values only)."""
        p = self.progress
        return {
            "epoch": p.epoch, "iter_in_epoch": p.iter_in_epoch, "iteration": p.iteration,
            "history": json.loads(json.dumps(p.history)), "epoch_sums": dict(p.epoch_sums), "epoch_count": p.epoch_count,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "early_stopping": self.stopper.state_dict(), "rng": rng_state(),
            "world_size": self.info.world_size, "global_batch": self.t.batch_size * self.info.world_size,
            "config": resume_fingerprint(self.cfg.model_dump(mode="json")),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a resume state."""
        gb = self.t.batch_size * self.info.world_size
        if state.get("global_batch", gb) != gb and state.get("iter_in_epoch", 0):
            log.warning("resuming mid-epoch with a different global batch (%s -> %s): the epoch restarts at its "
                        "beginning", state.get("global_batch"), gb)
            state = {**state, "iter_in_epoch": 0}
        self.progress = Progress(state["epoch"], state["iter_in_epoch"], state["iteration"], list(state["history"]),
                                 dict(state.get("epoch_sums", {})), int(state.get("epoch_count", 0)))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.stopper.load_state_dict(state["early_stopping"])

    @property
    def finished(self) -> bool:
        p = self.progress
        return self.stopper.stopped or p.epoch >= self.t.epochs or p.iteration >= self.total_iters

    # ------------------------------------------------------------------ loop
    def fit(self) -> None:
        """Train until the epoch/iteration budget is spent or early stopping says stop."""
        if self.progress.iteration:
            log.info("resumed at epoch %d, iteration %d (%d in the epoch)", self.progress.epoch,
                     self.progress.iteration, self.progress.iter_in_epoch)
        while not self.finished:
            p = self.progress
            self.sampler.set_epoch(p.epoch, p.iter_in_epoch)
            completed = self._train_epoch()
            if self.stopper.stopped:
                break
            if not completed:  # iteration budget reached mid-epoch: score what we have and stop
                self._end_epoch(final=True)
                break
            self._end_epoch(final=False)

    def _end_epoch(self, final: bool) -> None:
        p = self.progress
        record: dict[str, Any] = {"epoch": p.epoch, "iteration": p.iteration,
                                  "lr": float(self.scheduler.get_last_lr()[0])}
        record.update({f"train_{k}": v / max(p.epoch_count, 1) for k, v in p.epoch_sums.items()})
        if not math.isfinite(record.get("train_loss", 0.0)):
            self.stopper.stop_nan(f"mean training loss of epoch {p.epoch}")
            log.error("stopping: %s", self.stopper.reason)
        last = final or p.epoch + 1 >= self.t.epochs or p.iteration >= self.total_iters
        if (p.epoch + 1) % self.t.validate_every == 0 or last:
            record.update(self._validate(p.epoch))
        p.history.append(record)
        p.epoch += 1
        p.iter_in_epoch, p.epoch_sums, p.epoch_count = 0, {}, 0
        self._save_resume()

    def _train_epoch(self) -> bool:
        """One epoch from the sampler's position; False when the iteration budget ended it early."""
        p, t, info = self.progress, self.t, self.info
        self.model.train()
        self.step.train()
        acc: dict[str, torch.Tensor] = {}
        n_acc, wait, t_last = 0, 0.0, time.perf_counter()
        if self.sink is not None:
            self.sink.set_epoch(p.epoch)
        it = iter(self.loader)
        t_prev = time.perf_counter()
        while True:
            if p.iteration >= self.total_iters:
                self._flush(acc, n_acc)  # the iterations since the last report count in the epoch's means
                return False
            t0 = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                self._flush(acc, n_acc)
                return True
            w = time.perf_counter() - t0
            wait += w
            torch.manual_seed(mix_seed(self.cfg.seed, info.rank, p.iteration))
            x, y = batch_to_device(batch, info.device, self.augment)  # augments here with --data.augment-on device
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                terms = self.step(x, y, p.iteration)
            self.optimizer.zero_grad(set_to_none=True)
            loss = terms["loss"]
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.step.after_backward(float(self.scaler.get_scale()))
                if t.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.step.after_backward()
                if t.grad_clip:
                    nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
                self.optimizer.step()
            self.step.after_step()
            self.scheduler.step()
            for k, v in terms.items():
                acc[k] = acc[k] + v.detach().float() if k in acc else v.detach().float()
            n_acc += 1
            if self.sink is not None:  # host clock only: no device sync is added for metrics
                now = time.perf_counter()
                self.sink.observe_iteration(now - t_prev, w, x.shape[0])
                t_prev = now
            p.iteration += 1
            p.iter_in_epoch += 1
            if p.iteration % t.log_every == 0:
                now = time.perf_counter()
                if not self._report(acc, n_acc, now - t_last, wait):
                    return False
                acc, n_acc, wait, t_last = {}, 0, 0.0, time.perf_counter()
            if t.checkpoint_every_iters and p.iteration % t.checkpoint_every_iters == 0 \
                    and p.iter_in_epoch < self.sampler.iters:  # the epoch end writes its own
                self._flush(acc, n_acc)
                acc, n_acc = {}, 0
                self._save_resume()

    def _flush(self, acc: dict[str, torch.Tensor], n: int) -> dict[str, float]:
        """All-reduce the accumulated terms (one sync) and add them to the epoch sums."""
        if not n:
            return {}
        keys = sorted(acc)
        vec = D.all_reduce_sum(torch.stack([acc[k] for k in keys]), self.info) / self.info.world_size
        values = dict(zip(keys, vec.tolist(), strict=True))
        p = self.progress
        for k, v in values.items():
            p.epoch_sums[k] = p.epoch_sums.get(k, 0.0) + v
        p.epoch_count += n
        return {k: v / n for k, v in values.items()}

    def _report(self, acc: dict[str, torch.Tensor], n: int, elapsed: float, wait: float) -> bool:
        means = self._flush(acc, n)
        p, info = self.progress, self.info
        lr = float(self.scheduler.get_last_lr()[0])
        images = n * self.t.batch_size * info.world_size
        values = {**{"loss" if k == "loss" else f"loss/{k}": v for k, v in means.items()}, "lr": lr,
                  "epoch": float(p.epoch)}
        if self.sink is not None:
            self.sink.log(values, step=p.iteration, kind="train")
        elif info.is_main:
            terms = " ".join(f"{k}={v:.4f}" for k, v in means.items())
            log.info("epoch %d it %d %s lr=%.3g %.1f img/s step %.3fs data-wait %.3fs", p.epoch, p.iteration, terms,
                     lr, images / max(elapsed, 1e-9), elapsed / n, wait / n)
        if not math.isfinite(means.get("loss", 0.0)):
            self.stopper.stop_nan(f"training loss at iteration {p.iteration}")
            log.error("stopping: %s", self.stopper.reason)
            return False
        return True

    def _validate(self, epoch: int) -> dict[str, Any]:
        t0, p_it = time.perf_counter(), self.progress.iteration
        cm, loss_sum, count = evaluate(self.model, self.val_loader, self.num_classes, self.info, self.autocast,
                                       self.channels_last, self.t.limit_val_batches)
        s = scores(cm, self.old, self.new)
        s["loss"] = loss_sum / count if count else float("nan")
        score = float(s[self.t.monitor])
        best = self.stopper.update(score, epoch)
        if best and self.info.is_main:
            self._save_weights("best", {"epoch": epoch, "metric": {self.t.monitor: score}})
        if self.info.is_main:
            old = "-" if math.isnan(s["miou_old"]) else f"{s['miou_old']:.4f}"  # step 0 has no old classes
            log.info("validation epoch %d: miou %.4f (old %s new %.4f) f1 %.4f loss %.4f%s (%.1fs)", epoch,
                     s["miou"], old, s["miou_new"], s["f1"], s["loss"], " best" if best else "",
                     time.perf_counter() - t0, extra={"kind": "val", "epoch": epoch})
            if self.stopper.stopped:
                log.info("early stopping: %s", self.stopper.reason)
        if self.sink is not None:
            values = {"miou": s["miou"], "miou/old": s["miou_old"], "miou/new": s["miou_new"], "acc": s["acc"],
                      "f1": s["f1"], "loss": s["loss"]}
            # no old classes at step 0: leave the series out rather than export NaN
            self.sink.log({k: v for k, v in values.items() if math.isfinite(v)}, step=p_it, kind="val")
        return {f"val_{k}": v for k, v in s.items()} | {"best": best}

    # ------------------------------------------------------------------ writing (rank 0)
    def _save_weights(self, rel: str, extra: dict[str, Any]) -> None:
        from cdseg.models.io import save_model

        save_model(self.model, str(self.out.path(rel)), self.card(extra), replace=True)  # type: ignore[arg-type]
        self.out.publish(rel)

    def _save_resume(self) -> None:
        if not self.info.is_main:
            return
        p = self.progress
        folder = save_resume(self.out.resume_root, p.iteration, self.model,
                             self.card({"epoch": p.epoch, "iteration": p.iteration}), self.state_dict(),
                             terms=self.step.state_tensors())
        self.out.publish(f"resume/{folder.name}")
        self.out.prune_resume(self.cfg.trainer.keep_remote_resume)
        write_text_atomic(self.out.path("history.json"), json.dumps(strict_json(p.history), indent=1, allow_nan=False))
        self.out.publish("history.json")
