"""Resume state and the previous step's checkpoint.

Layout of one step's folder (local; remote outputs are mirrored, see `cdseg.train.output`):

    resume/it-<iteration>/model/{model.safetensors, model.json}   weights after that iteration
    resume/it-<iteration>/model/terms.safetensors                 loss terms' state (parameter importance), if any
    resume/it-<iteration>/state.pt                                optimizer, scheduler, scaler, RNG,
                                                                  epoch, iteration, early stopping, history
Each `it-*` folder is written beside itself under a hidden name and renamed into place when complete
(`cdseg.utils.atomic.atomic_dir`); older ones are deleted only after the new one exists, so the
newest `it-*` folder is always whole. `state.pt` holds tensors, numbers, strings, lists and dicts
only, and is read with `torch.load(weights_only=True)`: nothing is unpickled.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cdseg.errors import CheckpointError
from cdseg.utils.atomic import atomic_dir

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
PREFIX = "it-"


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and numbers (weights_only-loadable)."""
    np_state: Any = np.random.get_state()
    py_version, py_tuple, py_gauss = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": {"version": py_version, "state": torch.tensor(py_tuple, dtype=torch.int64),
                   "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `rng_state()`."""
    torch.set_rng_state(state["torch"])
    npd = state["numpy"]
    np.random.set_state(("MT19937", npd["keys"].numpy().astype(np.uint32), npd["pos"], npd["has_gauss"], npd["cached"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_dirs(resume_root: Path) -> list[Path]:
    """Complete resume folders, oldest first (hidden temporaries are ignored)."""
    if not resume_root.is_dir():
        return []
    found = []
    for p in resume_root.iterdir():
        if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE_FILE).is_file():
            try:
                found.append((int(p.name[len(PREFIX):]), p))
            except ValueError:
                continue
    return [p for _, p in sorted(found)]


def latest_resume(resume_root: Path) -> Path | None:
    """The newest complete resume folder, or None."""
    dirs = resume_dirs(resume_root)
    return dirs[-1] if dirs else None


def save_resume(resume_root: Path, iteration: int, model: torch.nn.Module, card: dict[str, Any],
                state: dict[str, Any], keep: int = 1, terms: dict[str, torch.Tensor] | None = None) -> Path:
    """Write `it-<iteration>/` atomically, then drop all but the newest `keep` folders.

    `terms`: the loss terms' tensor state (parameter importance), saved as `model/terms.safetensors`."""
    from cdseg.models.io import save_model

    target = resume_root / f"{PREFIX}{iteration:09d}"
    with atomic_dir(target, replace=True) as tmp:
        save_model(model, str(tmp / "model"), card, extra={"terms": terms or {}})  # type: ignore[arg-type]
        torch.save(state, tmp / STATE_FILE)
    for old in resume_dirs(resume_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_state(folder: Path) -> dict[str, Any]:
    """Read `state.pt` without unpickling arbitrary objects."""
    try:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise CheckpointError(f"resume state {folder / STATE_FILE} cannot be read ({exc}); delete {folder} to "
                              "resume from an older state or start over") from exc
    if not isinstance(state, dict) or "iteration" not in state:
        raise CheckpointError(f"resume state {folder / STATE_FILE} has no 'iteration'; it was not written by cdseg train")
    return state


def check_previous(card: dict[str, Any], uri: str, *, task: str, step: int, steps: list[list[str]],
                   bands: list[str]) -> None:
    """Refuse a previous-step card that is not step `step - 1` of the same task, naming the field."""
    def _bad(field: str, got: object, want: object) -> CheckpointError:
        return CheckpointError(f"previous checkpoint {uri}: field '{field}' is {got!r}, expected {want!r} for "
                               f"--task.name {task} --task.step {step}; pass the step-{step - 1} model of this task "
                               "with --prev-checkpoint")

    if card.get("task") != task:
        raise _bad("task", card.get("task"), task)
    if card.get("step") != step - 1:
        raise _bad("step", card.get("step"), step - 1)
    got_steps = card.get("classes", card.get("class_names_per_step", card.get("steps")))
    if got_steps is not None and [list(s) for s in got_steps] != [list(s) for s in steps[:step]]:
        raise _bad("classes", got_steps, steps[:step])
    got_bands = card.get("bands")
    if got_bands is not None and list(got_bands) != list(bands):
        raise _bad("bands", got_bands, bands)


#: options that may change when a run resumes from a resume state; EVERY other option of the resolved config
#: (and any option added later, e.g. a new loss term's section) must be the same, or the resume is refused.
#: An entry names an option or a whole section.
RESUME_MAY_CHANGE = (
    "output", "prev_checkpoint", "name", "comment", "storage", "metrics",
    # where / how the data is read, not what is learned (a restarted pod may see the dataset at another path)
    "data.workers", "data.dataset", "data.verify",
    # where the augmentation runs: the same draws and patches (up to a GPU resize's float rounding)
    "data.augment_on",
    # budget, validation, early stopping, logging, checkpoints, speed knobs that do not change the arithmetic
    "trainer.device", "trainer.epochs", "trainer.max_iters", "trainer.max_iters_by_step",
    "trainer.limit_batches", "trainer.limit_val_batches",
    "trainer.validate_every", "trainer.monitor", "trainer.patience", "trainer.min_delta", "trainer.restore_best",
    "trainer.channels_last", "trainer.compile", "trainer.log_every", "trainer.checkpoint_every_iters",
    "trainer.resume", "trainer.keep_remote_resume", "trainer.deterministic",
)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def resume_fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The options of a resolved config (model_dump(mode="json")) that a resume must not change: all of them
    but `RESUME_MAY_CHANGE`."""
    flat = _flatten(config)
    return {k: v for k, v in flat.items()
            if not any(k == key or k.startswith(key + ".") for key in RESUME_MAY_CHANGE)}


def check_resume_config(saved: dict[str, Any] | None, current: dict[str, Any], folder: Path,
                        defaults: dict[str, Any] | None = None) -> None:
    """Refuse a resume state written by a run with other settings, naming the first option that differs.

    An option the saved state does not record (it was written by an older cdseg) counts as its value in
    `defaults` (the options' own defaults, which is how the older code behaved)."""
    if not saved:
        return
    missing = object()
    keys = sorted(set(saved) | set(current), key=lambda k: (k != "method", k))

    def was(k: str) -> Any:
        return saved[k] if k in saved else (defaults or {}).get(k, missing)

    diff = [k for k in keys if was(k) != current.get(k, missing)]
    if diff:
        before = ", ".join(f"--{k.replace('_', '-')}={saved.get(k)!r}" for k in diff[:6])
        now = ", ".join(f"{current.get(k)!r}" for k in diff[:6])
        more = f" (and {len(diff) - 6} more)" if len(diff) > 6 else ""
        raise CheckpointError(f"resume state {folder} was written with {before}{more}; this run has {now}; use another "
                              f"--output, delete {folder.parent}, or pass --no-trainer.resume to start over")
