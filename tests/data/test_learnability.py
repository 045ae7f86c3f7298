"""Generated scenes are learnable: a tiny CNN trained for a minute on CPU reaches a non-trivial mIoU.

Opt-in (`pytest -m slow tests/data/test_learnability.py`): about a minute of CPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cdseg.cli.main import main
from cdseg.data.dataset import IncrementalDataset
from cdseg.data.transforms import train_transform


def tiny_net(bands: int, classes: int) -> nn.Module:
    def block(i: int, o: int, d: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=d, dilation=d), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    return nn.Sequential(*block(bands, 32, 1), *block(32, 32, 2), *block(32, 48, 4), *block(48, 48, 8),
                         *block(48, 48, 1), nn.Conv2d(48, classes, 1))


def miou(pred: np.ndarray, truth: np.ndarray, classes: range) -> tuple[float, list[float]]:
    ious = []
    for c in classes:
        inter, union = ((pred == c) & (truth == c)).sum(), ((pred == c) | (truth == c)).sum()
        ious.append(float(inter / union) if union else float("nan"))
    return float(np.nanmean(ious)), ious


@pytest.mark.slow
def test_tiny_cnn_learns_generated_scenes(tmp_path: Path):
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rel, prep = tmp_path / "rel", tmp_path / "prep"
    assert main(["synth", "--output", str(rel), "--size", "512", "--train-scenes", "6", "--test-scenes", "2",
                 "--products", "RGBIR,labels"]) == 0
    assert main(["prepare", "--input", str(rel), "--output", str(prep), "--patch-size", "128", "--overlap", "0",
                 "--val-count", "0"]) == 0
    train = IncrementalDataset(prep, "offline", 0, "train", transform=train_transform(96, scale=(0.5, 1.0)))
    test = IncrementalDataset(prep, "offline", 0, "test")
    loader = torch.utils.data.DataLoader(train, batch_size=8, shuffle=True, drop_last=True)
    net = tiny_net(4, 7)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    start, steps = time.time(), 0
    while time.time() - start < 60 and steps < 400:
        for batch in loader:
            loss = nn.functional.cross_entropy(net(batch["image"]), batch["mask"], ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    net.eval()
    preds, truths = [], []
    with torch.no_grad():
        for item in test:
            preds.append(net(item["image"][None]).argmax(1)[0].numpy())
            truths.append(item["mask"].numpy())
    score, ious = miou(np.stack(preds), np.stack(truths), range(1, 7))
    print(f"tiny CNN, {steps} steps: mIoU {score:.3f}, per class {np.round(ious, 3).tolist()}")
    assert score > 0.4, ious
