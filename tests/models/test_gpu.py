"""GPU-only checks (opt-in: `pytest -m gpu`): inplace-abn's CUDA kernels and bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from cdseg.models.norm import ABN, norm_act

from ._pairs import same_random_state

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("activation", ["leaky_relu", "identity"])
@pytest.mark.parametrize("training", [True, False])
def test_iabn_cuda_matches_the_fallback(activation: str, training: bool) -> None:
    pytest.importorskip("inplace_abn")
    torch.manual_seed(0)
    ref = norm_act("iabn", 16, activation).cuda()
    assert not isinstance(ref, ABN)
    ours = ABN(16, activation=activation).cuda()
    same_random_state(ref, ours, 16, training)
    x = torch.randn(4, 16, 24, 24, device="cuda")
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref, y_ours = ref(x_ref * 1.0), ours(x_ours * 1.0)
    assert torch.allclose(y_ref, y_ours, atol=1e-4)
    grad = torch.randn_like(y_ref)
    y_ref.backward(grad)
    y_ours.backward(grad)
    assert torch.allclose(x_ref.grad, x_ours.grad, atol=1e-3)
    assert torch.allclose(ref.weight.grad, ours.weight.grad, atol=1e-2, rtol=1e-3)
    assert torch.allclose(ref.bias.grad, ours.bias.grad, atol=1e-2, rtol=1e-3)
    for key, value in ref.state_dict().items():
        assert torch.allclose(value.float(), ours.state_dict()[key].float(), atol=1e-4), key


@pytest.mark.parametrize("norm", ["bn", "iabn_sync"])
@pytest.mark.parametrize("encoder", ["resnet18", "tresnet_m"])
def test_amp_bf16_forward_backward(norm: str, encoder: str, stats_gpu) -> None:
    from cdseg.losses import CrossEntropy
    from cdseg.models import ModelConfig, build_segmenter

    torch.manual_seed(0)
    cfg = ModelConfig(encoder=encoder, pretrained=False, norm=norm, channels_last=True)
    model = build_segmenter(cfg, [3, 2], ["R", "G", "B", "IR"], stats_gpu).cuda()
    x = torch.rand(2, 4, 128, 128, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (2, 128, 128), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, features = model(x)
        loss = CrossEntropy()(logits, y) + features.float().pow(2).mean()
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        ref = model(x)[0].float()
    with torch.no_grad():
        full = model(x)[0]
    assert (ref - full).abs().max() < 0.5  # bf16 agrees with fp32 to a loose tolerance


@pytest.fixture
def stats_gpu() -> dict:
    return {b: {"mean": 0.25, "std": 0.5} for b in ("R", "G", "B", "IR")}


def test_iabn_sync_with_an_explicit_group_on_one_gpu(tmp_path, stats_gpu) -> None:
    # a 1-process NCCL group: the sync path (all_gather of statistics) runs and gives the unsynced numbers
    import torch.distributed as dist

    from cdseg.models import ModelConfig, build_segmenter, convert_sync

    pytest.importorskip("inplace_abn")
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        cfg = ModelConfig(encoder="resnet18", pretrained=False, norm="iabn_sync")
        synced = build_segmenter(cfg, [3], ["R", "G", "B", "IR"], stats_gpu).cuda()
        local = build_segmenter(cfg, [3], ["R", "G", "B", "IR"], stats_gpu).cuda()
        local.load_state_dict(synced.state_dict())
        convert_sync(synced, dist.group.WORLD)
        assert all(m.group is dist.group.WORLD for m in synced.modules() if hasattr(m, "set_group"))
        x = torch.rand(2, 4, 64, 64, device="cuda")
        a, _ = synced(x)
        b, _ = local(x)
        assert torch.allclose(a, b, atol=1e-4)
        a.mean().backward()
        b.mean().backward()
        for (name, p), q in zip(synced.named_parameters(), local.parameters(), strict=True):
            assert torch.allclose(p.grad, q.grad, atol=1e-4, rtol=1e-3), name
    finally:
        dist.destroy_process_group()
