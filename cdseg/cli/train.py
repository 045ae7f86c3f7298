"""`cdseg train`: one incremental step, as one process or one rank of torchrun / a PyTorchJob."""

from __future__ import annotations

import logging

from cdseg.cli.command import Command
from cdseg.train.config import METHODS, TrainConfig

log = logging.getLogger("cdseg")


def _run(cfg: TrainConfig) -> int:
    from cdseg.train import run_train

    uri = run_train(cfg)
    log.info("model: %s", uri)
    return 0


COMMAND = Command(
    name="train",
    help="train one incremental step (single process or under torchrun)",
    config=TrainConfig,
    run=_run,
    description=(
        f"Train step --task.step of --task.name with --method ({', '.join(METHODS)}) and write\n"
        "<output>/step-<k>/{model,best,resume,config.yaml,history.json}. Step k >= 1 starts from step k-1's model\n"
        "(--prev-checkpoint, default <output>/step-<k-1>/model). A restarted run resumes from resume/ by itself.\n"
        "Multi-GPU / multi-node: torchrun --nproc-per-node N -m cdseg train ... (NCCL on CUDA, gloo on CPU)."
    ),
    epilog=(
        "The original scripts' options are accepted as written, e.g.\n"
        "  cdseg train --method mib-cd --task.name 6s --task.step 1 --task.filter-mode split --model.encoder tresnet_m\n"
        "    --model.norm iabn_sync --model.act ident --trainer.batch-size 8 --trainer.amp --trainer.patience 25\n"
        "    --optimizer.lr 1e-3 --scheduler.target cosine --in-channels 3 --aug.factor 0.1 --aug.factor-icl 0.1\n"
        "    --aug.fixed-angles --name rgb-mib-cd --comment 'MiB-CD step 1'\n"
        "Recipe files: cdseg/train/recipes/<method>.yaml (paper-6s-split.yaml holds the scripts' shared options);\n"
        "docs/training.md says how to add a method."
    ),
)
