"""`run_test`: evaluate one checkpoint on whole scenes and write `<output>/step-<k>/eval/`."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cdseg import storage as store
from cdseg.errors import CheckpointError, DataError, UserError
from cdseg.evaluate import outputs, ranks
from cdseg.evaluate.config import EvalOptions, TestConfig
from cdseg.evaluate.confusion import confusion_matrix, summarise
from cdseg.evaluate.sliding import InferenceStats, predict_scene
from cdseg.evaluate.tta import D4_SIZE, make_prob_fn
from cdseg.utils.lease import remove_stale

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclass
class EvalSetup:
    """What a step's evaluation needs to know: output classes, old/new groups, label LUT, band order."""

    task: str
    step: int
    method: str | None
    class_names: list[str]
    old: list[str]
    new: list[str]
    lut: np.ndarray  # uint8[256]: raw class index -> model output index (255 stays 255)
    bands: list[str]  # the model's input bands, in order
    band_index: list[int]  # positions of `bands` in the dataset's scenes
    sha256: str | None = None
    palette: dict[str, list[int]] = field(default_factory=dict)  # class -> display colour (the dataset's)


def evaluate_scenes(
    model: nn.Module,
    scenes: Iterable[Any],
    setup: EvalSetup,
    opts: EvalOptions,
    device: torch.device,
    on_scene: Callable[[Any, np.ndarray, np.ndarray], None] | None = None,
) -> tuple[np.ndarray, InferenceStats]:
    """Predict every scene (objects with `id`, `image` C x H x W, `label` H x W raw indices) and sum one confusion matrix.

    `on_scene(scene, target, pred)` sees each scene's target and uint8 prediction (for the outputs).
    The returned matrix is this process's share only; `run_test` all-reduces it.
    """
    k = len(setup.class_names)
    prob_fn = make_prob_fn(model, tta=opts.tta, amp=opts.amp)
    lut = torch.as_tensor(setup.lut, dtype=torch.int64, device=device)
    cm = torch.zeros((k, k), dtype=torch.int64, device=device)
    total = InferenceStats()
    for scene in scenes:
        image = np.asarray(scene.image)
        label = np.asarray(scene.label)
        if image.ndim != 3 or label.shape != image.shape[1:]:
            raise DataError(f"scene {scene.id}: image {image.shape} and label {label.shape} do not match; "
                            "prepare the dataset again")
        if (image.shape[1] < opts.window or image.shape[2] < opts.window) and opts.small_scene == "error":
            raise DataError(f"scene {scene.id} is {image.shape[1]}x{image.shape[2]} px, smaller than --eval.window="
                            f"{opts.window}; pass a smaller --eval.window or --eval.small-scene pad")
        x = torch.from_numpy(np.ascontiguousarray(image[setup.band_index])).to(device)
        start = time.perf_counter()
        pred, stats = predict_scene(x, prob_fn, k, window=opts.window, overlap=opts.overlap, batch_size=opts.batch_size,
                                    blend=opts.blend, floor=opts.blend_floor, passes_per_window=D4_SIZE if opts.tta else 1)
        target = lut[torch.from_numpy(label.astype(np.int64, copy=False)).to(device)]
        cm += confusion_matrix(target, pred, k)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stats.seconds = time.perf_counter() - start
        total.add(stats)
        total.per_scene[str(scene.id)] = stats.pixels_pushed
        log.info("scene %s: %dx%d px, %d windows, %.1f s", scene.id, image.shape[1], image.shape[2], stats.windows, stats.seconds)
        if on_scene is not None:
            on_scene(scene, target.to(torch.uint8).cpu().numpy(), pred.to(torch.uint8).cpu().numpy())
    return cm.cpu().numpy(), total


def _names(items: Iterable[Any], classes: list[str]) -> list[str]:
    """Class names; an integer is a raw index into the dataset's `classes` (cards of early versions)."""
    return [classes[int(i)] if isinstance(i, (int, np.integer)) and 0 <= int(i) < len(classes) else str(i)
            for i in items]


def _card(card: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        value = card.get(key) if isinstance(card, dict) else getattr(card, key, None)
        if value is not None:
            return value
    return default


def _task_of(card: Any, manifest: dict[str, Any]) -> Any:
    """The card's task, rebuilt from its class lists (so user task files need not travel with the checkpoint),
    over the dataset's classes (from its manifest)."""
    from cdseg.tasks import Task, get_task

    name, step = _card(card, "task"), _card(card, "step")
    if name is None or step is None:
        raise CheckpointError("the checkpoint card has no task/step; use a checkpoint written by cdseg train")
    classes = [str(c) for c in manifest.get("classes", [])]
    steps = _card(card, "classes", "class_names_per_step", "steps")
    if steps is None:
        return get_task(str(name), manifest), int(step)
    steps = [_names(s, classes) for s in steps]
    if len(steps) != int(step) + 1:
        raise CheckpointError(f"the checkpoint card says step {step} but lists classes for {len(steps)} steps; "
                              "the checkpoint is inconsistent")
    shipped = (manifest.get("tasks") or {}).get(name)
    if shipped is not None and [list(s) for s in shipped[: len(steps)]] != steps:
        raise CheckpointError(f"the checkpoint's classes per step {steps} differ from task {name!r} "
                              f"({shipped[: len(steps)]}); evaluate a checkpoint of that task")
    unknown = sorted({c for s in steps for c in s} - set(classes))
    if unknown:
        raise DataError(f"the dataset has no classes {unknown} that the checkpoint predicts (dataset classes: "
                        f"{classes}); use a dataset prepared for this task")
    return Task(str(name), tuple(tuple(s) for s in steps), tuple(classes), manifest.get("background"),
                int(manifest.get("ignore_index", 255))), int(step)


def build_setup(card: Any, manifest: dict[str, Any]) -> EvalSetup:
    """Check checkpoint against dataset (task, classes, bands) and derive the step's labels; errors exit 2."""
    task, step = _task_of(card, manifest)
    class_names = list(task.class_names(step))
    card_names = _card(card, "class_names")
    if card_names is not None and list(card_names) != class_names:
        raise CheckpointError(f"the checkpoint's output classes {card_names} differ from its task's {class_names}; "
                              "the checkpoint is inconsistent")
    dataset_classes = [str(c) for c in manifest.get("classes", [])]
    missing = [c for c in class_names[1:] if c not in dataset_classes]
    if missing:
        raise DataError(f"the dataset has no classes {missing} that the checkpoint predicts (dataset classes: "
                        f"{dataset_classes}); use a dataset prepared for this task")
    data_bands = list(manifest.get("bands", []))
    bands = list(_card(card, "bands", default=data_bands))
    absent = [b for b in bands if b not in data_bands]
    if absent:
        raise CheckpointError(f"the checkpoint needs bands {bands} but the dataset has {data_bands} (missing {absent}); "
                              "prepare the dataset with those channels or use a matching checkpoint")
    return EvalSetup(task=task.name, step=step, method=_card(card, "method"), class_names=class_names,
                     old=list(task.old_classes(step)), new=list(task.new_classes(step)),
                     lut=np.asarray(task.label_lut(step, "test"), dtype=np.uint8),  # any split: seen kept, future -> 0
                     bands=bands, band_index=[data_bands.index(b) for b in bands], sha256=_card(card, "sha256"),
                     palette=dict(zip(dataset_classes, manifest.get("colours") or [], strict=False)))


def fingerprint(setup: EvalSetup, dataset_id: str, split: str, scenes: Sequence[str], opts: EvalOptions,
                labels: str = "full") -> str:
    """Identity of an evaluation: checkpoint weights, dataset fingerprint, scenes, labels and the options that change
    numbers."""
    blob = json.dumps({"sha256": setup.sha256, "task": setup.task, "step": setup.step, "dataset": dataset_id,
                       "split": split, "scenes": list(scenes), "options": opts.fingerprint_fields(),
                       **({"labels": labels} if labels != "full" else {})}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _existing(eval_uri: str, fp: str, overwrite: bool) -> dict[str, Any] | None:
    """The metrics of an identical earlier evaluation (a no-op), None to evaluate; a different one is an error."""
    if not store.exists(eval_uri):
        return None
    metrics_uri = store.join(eval_uri, "metrics.json")
    try:
        old = json.loads(store.read_text(metrics_uri)) if store.exists(metrics_uri) else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        old = None
    if old is not None and old.get("fingerprint") == fp and not overwrite:
        log.info("%s already holds this evaluation (same checkpoint, data and options): nothing to do", eval_uri)
        return old
    if overwrite and old is not None and old.get("kind", "cdseg-eval") == "cdseg-eval":
        return None
    what = ("a different evaluation (checkpoint " + str(old.get("checkpoint", {}).get("sha256"))[:12] +
            f", options {old.get('options')})") if old else "something that is not a cdseg evaluation"
    raise UserError(f"{eval_uri} already holds {what}; pass --overwrite to replace it or choose another --output")


def _scene_ids(manifest: dict[str, Any], split: str, wanted: Sequence[str]) -> list[str]:
    available = list(manifest.get("splits", {}).get(split, []))
    if not wanted:
        if not available:
            raise DataError(f"the dataset's {split!r} split has no scenes; pass --split with a split that has scenes")
        return available
    every = {s for ids in manifest.get("splits", {}).values() for s in ids}
    missing = [s for s in wanted if s not in every]
    if missing:
        raise DataError(f"scenes {missing} are not in the dataset (its {split!r} scenes: {available}); fix --scenes")
    return list(wanted)


def _dataset_id(dataset: Any) -> str:
    fp = getattr(dataset, "fingerprint", None)
    if fp:
        return str(fp)
    return hashlib.sha256(json.dumps(dataset.manifest, sort_keys=True, default=str).encode()).hexdigest()


def run_test(cfg: TestConfig) -> dict[str, Any]:
    """Evaluate `cfg.checkpoint` on whole scenes; returns the content of metrics.json (on every rank).

    Under torchrun the scenes are sharded across ranks, the confusion matrix is all-reduced, and rank 0
    writes the outputs (other ranks' predictions are sent to it).
    """
    from cdseg.data.prepared import PreparedDataset
    from cdseg.models.io import load_model, read_card

    store.configure(cfg.storage)
    store.check_output(cfg.output, inside=True)  # a file, under a file, not writable: refused before any reading
    info = ranks.init_distributed(cfg.eval.device)
    device = info.device
    raw = _card(read_card(cfg.checkpoint), "step")  # the card alone names the evaluation's folder
    try:
        step = int(raw)
    except (TypeError, ValueError):
        raise CheckpointError(f"the model card of {cfg.checkpoint} has no step number ({raw!r}); use a checkpoint "
                              "written by cdseg train") from None
    eval_uri = store.join(cfg.output, f"step-{step}", "eval")
    with contextlib.ExitStack() as lease:
        busy: UserError | None = None
        if info.is_main:
            try:  # one owner (a lock file, or a lease object in an s3:// prefix): a second `cdseg test` fails at
                # once, before the dataset is verified or the model built
                lease.enter_context(store.output_lease(eval_uri, "output"))
                if not store.is_remote(eval_uri):
                    remove_stale(store.local_path(eval_uri))  # staging folders of a killed `cdseg test`
            except UserError as exc:
                busy = exc
        flag = ranks.all_reduce_sum(torch.tensor([1 if busy else 0], dtype=torch.int64, device=device), info)
        if busy is not None:
            raise busy
        if int(flag[0]):
            raise UserError(f"rank 0 could not take the lease of {eval_uri}; see rank 0's error")
        dataset = PreparedDataset.open(cfg.dataset)
        dataset.check(full=cfg.verify)  # a damaged file is one line naming it, never metrics from bad pixels
        manifest = dataset.manifest
        model, card = load_model(cfg.checkpoint, device=str(device))
        setup = build_setup(card, manifest)
        scene_ids = _scene_ids(manifest, cfg.split, cfg.scenes)
        labels = label_set(cfg.labels, dataset)
        fp = fingerprint(setup, _dataset_id(dataset), cfg.split, scene_ids, cfg.eval, labels)
        return _evaluate(cfg, info, device, dataset, model, setup, scene_ids, fp, eval_uri, labels)


def label_set(wanted: str, dataset: Any) -> str:
    """The labels an evaluation scores against: --labels, or (auto) eroded where the dataset has them, as the ISPRS
    benchmark reports, else full; a set the dataset lacks is a DataError saying how to get it."""
    have = list(getattr(dataset, "label_sets", None) or [_training_labels(dataset)])
    if wanted == "auto":
        return "eroded" if "eroded" in have else have[0]
    if wanted not in have:
        raise DataError(f"--labels {wanted}: {dataset.uri} has only {', '.join(have)} labels; prepare it from a "
                        "release with both (ISPRS: add the noBoundary / eroded ground truth) or use --labels "
                        f"{have[0]}")
    return wanted


def _evaluate(cfg: TestConfig, info: Any, device: torch.device, dataset: Any, model: nn.Module, setup: EvalSetup,
              scene_ids: list[str], fp: str, eval_uri: str, labels: str = "full") -> dict[str, Any]:
    """Evaluate (unless an identical evaluation is there) and write `eval_uri` (rank 0)."""
    done = _existing(eval_uri, fp, cfg.overwrite)
    if done is not None:
        return done
    model.eval().to(device)
    preview_ids = scene_ids[: cfg.eval.previews]
    kept: dict[str, np.ndarray] = {}

    def keep(scene: Any, target: np.ndarray, pred: np.ndarray) -> None:
        if cfg.eval.geotiff or str(scene.id) in preview_ids:
            kept[str(scene.id)] = pred

    started = time.perf_counter()
    mine = ranks.shard(scene_ids, info)
    read_as = None if labels == _training_labels(dataset) else labels  # None: the `label` files training used
    cm, stats = evaluate_scenes(model, (dataset.read_scene(s, read_as) for s in mine), setup, cfg.eval, device, keep)
    cm = ranks.all_reduce_sum(torch.as_tensor(cm, dtype=torch.int64, device=device), info).cpu().numpy()
    work = ranks.all_reduce_sum(torch.tensor([stats.pixels_pushed, stats.scene_pixels, stats.windows],
                                             dtype=torch.int64, device=device), info).tolist()
    seconds = time.perf_counter() - started
    metrics = _metrics(cfg, setup, scene_ids, cm, fp, work, seconds, info.world_size)
    metrics["dataset"]["labels"] = labels
    preds = ranks.share_arrays(scene_ids, kept, info)
    if info.is_main:
        _write(cfg, eval_uri, metrics, preds, dataset, setup, preview_ids, read_as)
        _push(cfg, metrics)
    ranks.barrier(info)
    return metrics


def _metrics(cfg: TestConfig, setup: EvalSetup, scene_ids: list[str], cm: np.ndarray, fp: str,
             work: list[int], seconds: float, world_size: int) -> dict[str, Any]:
    summary = summarise(cm, setup.class_names, setup.old, setup.new)
    pushed, scene_px, windows = work
    return {
        "format_version": FORMAT_VERSION,
        "kind": "cdseg-eval",
        "task": setup.task, "step": setup.step, "method": setup.method,
        "checkpoint": {"uri": cfg.checkpoint, "sha256": setup.sha256},
        "dataset": {"uri": cfg.dataset, "split": cfg.split, "scenes": scene_ids},
        "options": cfg.eval.fingerprint_fields(),
        "fingerprint": fp,
        "classes": setup.class_names, "old_classes": setup.old, "new_classes": setup.new,
        **summary,
        "confusion_matrix": cm.astype(np.int64).tolist(),
        "confusion_matrix_axes": "rows = true class, columns = predicted class (indices of `classes`)",
        "work": {"windows": windows, "pixels_pushed": pushed, "scene_pixels": scene_px,
                 "pushed_per_scene_pixel": pushed / scene_px if scene_px else None, "seconds": seconds,
                 "megapixels_per_s": scene_px / 1e6 / seconds if seconds > 0 else None, "world_size": world_size},
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _training_labels(dataset: Any) -> str:
    """The label set a prepared dataset's `label` files are (what training used)."""
    return "full" if dataset.manifest.get("boundary", True) else "eroded"


def _write(cfg: TestConfig, eval_uri: str, metrics: dict[str, Any], preds: dict[str, np.ndarray], dataset: Any,
           setup: EvalSetup, preview_ids: Sequence[str], read_as: str | None = None) -> None:
    from cdseg.config import dump_config

    with store.staged_dir(eval_uri, replace=cfg.overwrite) as tmp:
        tmp = Path(tmp)
        outputs.write_json(tmp / "metrics.json", metrics)
        (tmp / "metrics.md").write_text(outputs.markdown_table(metrics))
        (tmp / "config.yaml").write_text(dump_config(cfg))
        outputs.confusion_png(tmp / "confusion.png", np.asarray(metrics["confusion_matrix"]), setup.class_names,
                              f"{setup.task} step {setup.step} ({setup.method or 'n/a'}): row-normalised %")
        if cfg.eval.geotiff:
            (tmp / "predictions").mkdir()
        if preview_ids:
            (tmp / "previews").mkdir()
        for scene_id in metrics["dataset"]["scenes"]:
            if not (cfg.eval.geotiff or scene_id in preview_ids):
                continue  # only the metrics were wanted for this scene (its prediction was not kept)
            pred = preds[scene_id]
            if cfg.eval.geotiff:
                crs, transform = dataset.georeference(scene_id)  # the header only: no second read of the pixels
                outputs.prediction_geotiff(tmp / "predictions" / f"{scene_id}.tif", pred, crs, transform,
                                           setup.class_names, setup.palette)
            if scene_id in preview_ids:
                scene = dataset.read_scene(scene_id, read_as)  # rank 0 re-reads the previewed inputs: only predictions travel
                target = setup.lut[np.asarray(scene.label)]
                outputs.preview_png(tmp / "previews" / f"{scene_id}.png", np.asarray(scene.image)[setup.band_index],
                                    setup.bands, target, pred, setup.class_names, f"scene {scene_id}, step {setup.step}",
                                    palette=setup.palette)
    log.info("step %d: mIoU old %s new %s all %s -> %s", setup.step,
             *(_pct(metrics["mean"][g]["miou"]) for g in ("old", "new", "all")), eval_uri)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


#: the Pushgateway job of `cdseg test`'s pushed metrics (groups keyed by run and step)
PUSH_JOB = "cdseg-test"


def delete_pushed(run: str, gateway: str | None = None) -> int:
    """Delete every group `cdseg test` pushed for `run` (the pipeline's report step); returns how many."""
    from cdseg.metrics import delete_groups
    from cdseg.metrics.config import MetricsConfig

    cfg = MetricsConfig(pushgateway=gateway or os.environ.get("CDSEG_METRICS__PUSHGATEWAY") or None)
    return delete_groups(cfg, PUSH_JOB, {"run": run}) if run else 0


def _push(cfg: TestConfig, metrics: dict[str, Any]) -> None:
    """Push the headline numbers to the Pushgateway when one is configured (never fails the evaluation)."""
    from cdseg.metrics import push_summary

    values = {f"miou/{g}": metrics["mean"][g]["miou"] for g in ("old", "new", "all")}
    values["acc/all"] = metrics["pixel_accuracy"]
    values["duration_seconds"] = metrics["work"]["seconds"]
    run = cfg.push_run or cfg.output.rstrip("/").rsplit("/", 1)[-1] or "run"
    try:
        push_summary(cfg.metrics, PUSH_JOB, {"run": run, "step": metrics["step"]},
                     {k: float(v) for k, v in values.items() if v is not None},
                     labels={"task": metrics["task"], "method": str(metrics.get("method"))}, split=cfg.split)
    except Exception as exc:  # metrics are best effort: a bad gateway must not lose a finished evaluation
        log.warning("could not push evaluation metrics: %s", exc)
