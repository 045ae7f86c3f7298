"""Helpers of the trainer's tests: tiny configs on the shared prepared dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: CI-sized run: resnet18 from scratch, 64 px crops, 2 images per batch, 2 epochs of 2 iterations
TINY: dict[str, Any] = {
    "task.name": "222a",
    "model.encoder": "resnet18",
    "model.pretrained": False,
    "model.norm": "bn",
    "model.act": "relu",
    "data.crop_size": 64,
    "data.workers": 0,
    "trainer.batch_size": 2,
    "trainer.epochs": 2,
    "trainer.limit_batches": 2,
    "trainer.log_every": 1,
    "metrics.enabled": False,
}


def tiny_cli(dataset: Path, output: Path, **over: Any) -> dict[str, Any]:
    """Dotted options of a tiny run (keys with __ stand for dots)."""
    cli = {**TINY, "data.dataset": str(dataset), "output": str(output)}
    cli.update({k.replace("__", "."): v for k, v in over.items()})
    return cli


def tiny_cfg(dataset: Path, output: Path, **over: Any) -> Any:
    """A validated `TrainConfig` of a tiny run."""
    from cdseg.config import load_config
    from cdseg.train.config import TrainConfig

    return load_config(TrainConfig, cli=tiny_cli(dataset, output, **over), environ={})


def cli_args(cli: dict[str, Any]) -> list[str]:
    """The same options as `cdseg train` arguments."""
    args: list[str] = []
    for key, value in cli.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args
