from __future__ import annotations

import logging
import sys

import pytest
import torch
from torch import nn

from cdseg.models import convert_sync, norm
from cdseg.models.norm import ABN, norm_act

from ._pairs import same_random_state


@pytest.fixture
def no_iabn(monkeypatch: pytest.MonkeyPatch):
    """Pretend inplace-abn cannot be imported."""
    norm.reset_import_cache()
    monkeypatch.setitem(sys.modules, "inplace_abn", None)
    yield
    norm.reset_import_cache()


class FakeGroup:
    """Stands in for a torch ProcessGroup (only `size()` is used outside torch.distributed)."""

    def size(self) -> int:
        return 1


def test_fallback_abn_used_and_warned_once(no_iabn, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cdseg.models.norm"):
        a = norm_act("iabn", 4, "leaky_relu")
        b = norm_act("iabn_sync", 4, "identity")
    assert isinstance(a, ABN) and isinstance(b, ABN) and b.sync and not a.sync
    assert sum("inplace-abn is not importable" in r.message for r in caplog.records) == 1
    assert set(a.state_dict()) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


def test_fallback_abn_maths() -> None:
    torch.manual_seed(0)
    layer = ABN(3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([-2.0, 0.5, 1.0]))
        layer.bias.copy_(torch.tensor([0.1, -0.2, 0.0]))
    x = torch.randn(4, 3, 5, 5)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(layer.weight.abs() + layer.eps)
        bn.bias.copy_(layer.bias)
    expected = nn.functional.leaky_relu(bn(x), 0.01)
    assert torch.allclose(layer(x), expected, atol=1e-6)
    assert torch.allclose(layer.running_mean, bn.running_mean) and torch.allclose(layer.running_var, bn.running_var)
    assert int(layer.num_batches_tracked) == 1


@pytest.mark.parametrize("activation", ["leaky_relu", "identity"])
@pytest.mark.parametrize("training", [True, False])
def test_fallback_equals_inplace_abn_cpu(activation: str, training: bool) -> None:
    iabn = pytest.importorskip("inplace_abn")
    torch.manual_seed(0)
    ref = iabn.InPlaceABN(6, activation=activation, activation_param=0.01)
    ours = ABN(6, activation=activation)
    same_random_state(ref, ours, 6, training)
    x = torch.randn(3, 6, 4, 5)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref = ref(x_ref * 1.0)  # inplace-abn overwrites its input: feed it a fresh tensor
    y_ours = ours(x_ours * 1.0)
    assert torch.allclose(y_ref, y_ours, atol=1e-5)
    grad = torch.randn_like(y_ref)
    y_ref.backward(grad)
    y_ours.backward(grad)
    assert torch.allclose(x_ref.grad, x_ours.grad, atol=1e-4)
    assert torch.allclose(ref.weight.grad, ours.weight.grad, atol=1e-4)
    assert torch.allclose(ref.bias.grad, ours.bias.grad, atol=1e-4)
    for key, value in ref.state_dict().items():
        assert torch.allclose(value.float(), ours.state_dict()[key].float(), atol=1e-5), key


@pytest.mark.parametrize("kind", ["bn", "syncbn", "iabn", "iabn_sync"])
def test_every_norm_kind_builds_and_runs(kind: str, tiny_model) -> None:
    model = tiny_model(heads=[2], norm=kind)
    logits, _ = model(torch.rand(2, 3, 32, 32))
    logits.mean().backward()
    acts = [m for m in model.decoder.modules() if isinstance(m, (nn.LeakyReLU, nn.ReLU))]
    assert bool(acts) == (kind in ("bn", "syncbn"))  # iabn fuses its activation: no second one


def test_fallback_model_runs(no_iabn, tiny_model) -> None:
    model = tiny_model(heads=[2], norm="iabn_sync")
    assert any(isinstance(m, ABN) for m in model.modules())
    model(torch.rand(2, 3, 32, 32))[0].sum().backward()


@pytest.mark.parametrize("iabn_available", [True, False])
def test_convert_sync_hands_the_group_to_every_layer(iabn_available: bool, monkeypatch: pytest.MonkeyPatch,
                                                     tiny_model) -> None:
    from timm.layers import SyncBatchNormAct

    norm.reset_import_cache()
    if not iabn_available:
        monkeypatch.setitem(sys.modules, "inplace_abn", None)
    try:
        model = tiny_model(heads=[2], encoder="tresnet_m", norm="iabn_sync")
        group = FakeGroup()
        convert_sync(model, group)
        convert_sync(model, group)  # idempotent
        synced = [m for m in model.modules() if hasattr(m, "set_group")]
        assert synced and all(m.group is group for m in synced)
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert bns and all(isinstance(m, nn.SyncBatchNorm) and m.process_group is group for m in bns)
        # tresnet's BatchNormAct2d keeps its fused leaky_relu after conversion
        assert any(isinstance(m, SyncBatchNormAct) for m in model.encoder.modules())
        model.eval()
        assert model(torch.rand(1, 3, 32, 32))[0].shape == (1, 2, 32, 32)
    finally:
        norm.reset_import_cache()


def test_convert_sync_leaves_unsynced_kinds_alone(tiny_model) -> None:
    model = tiny_model(heads=[2], norm="bn")
    convert_sync(model, FakeGroup())
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())


@pytest.mark.parametrize("kind", ["bn", "iabn_sync"])
def test_bf16_autocast_on_cpu(kind: str, tiny_model) -> None:
    # inplace-abn's kernels have no bf16: its input is promoted to float32 inside our wrapper
    model = tiny_model(heads=[2], norm=kind)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, features = model(torch.rand(2, 3, 32, 32))
    assert torch.isfinite(logits.float()).all()
    logits.float().mean().backward()


def _sums(x: torch.Tensor) -> torch.Tensor:
    xd = x.double()
    n = torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=torch.float64)
    return torch.cat([xd.sum((0, 2, 3)), (xd * xd).sum((0, 2, 3)), n])


def test_reducer_sync_equals_one_big_batch() -> None:
    # rank 0 holds x0, "rank 1" holds x1: with the reducer adding rank 1's sums, rank 0's output, running
    # statistics and input gradient equal those of one process holding both halves
    torch.manual_seed(0)
    x0, x1 = torch.randn(2, 5, 4, 4), torch.randn(3, 5, 4, 4) * 2 + 1
    ref = ABN(5)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(5))
        ref.bias.copy_(torch.randn(5))
    layer = ABN(5, sync=True)
    layer.load_state_dict(ref.state_dict())
    other = _sums(x1)
    layer.reducer = lambda t: t + other
    a = x0.clone().requires_grad_()
    b = torch.cat([x0, x1]).requires_grad_()
    y = layer(a)
    y_ref = ref(b)
    assert torch.allclose(y, y_ref[:2], atol=1e-5)
    assert torch.allclose(layer.running_mean, ref.running_mean, atol=1e-6)
    assert torch.allclose(layer.running_var, ref.running_var, atol=1e-5)
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref[:2].backward(grad)
    assert torch.allclose(a.grad, b.grad[:2], atol=1e-5)


def test_set_stats_reducer_replaces_inplace_abn_sync(tiny_model) -> None:
    from cdseg.models.norm import set_stats_reducer

    model = tiny_model(heads=[2], norm="iabn_sync")
    model.eval()
    x = torch.rand(1, 3, 32, 32)
    before = model(x)[0]
    set_stats_reducer(model, lambda t: t)
    layers = [m for m in model.modules() if isinstance(m, ABN)]
    assert layers and all(m.reducer is not None for m in layers)
    assert torch.allclose(model(x)[0], before, atol=1e-5)
    model.train()
    model(torch.rand(2, 3, 32, 32))[0].mean().backward()
