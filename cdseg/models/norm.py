"""Normalisation + activation layers by short name, and the synchronised variants under DDP.

`norm_act(kind, channels, act)` builds the decoder's "norm then activation" block:

- `bn` / `syncbn`: `BatchNorm2d` followed by a separate activation module (`syncbn` is plain BatchNorm2d
  until the trainer calls `convert_sync(model, group)`);
- `iabn` / `iabn_sync`: inplace-abn's `InPlaceABN` / `InPlaceABNSync`, whose activation is *fused* in the
  layer (never followed by a second activation). Where inplace-abn is not importable, a pure-PyTorch
  `ABN` with the same parameters and numerics (BN with affine scale |w|+eps, then the activation) stands in,
  with a warning logged once.

This is the only module that imports `inplace_abn`. It never imports `torch.distributed`: the process group
is handed in by the trainer (`convert_sync`), because upstream's `InPlaceABNSync` captures
`distributed.group.WORLD` as a default argument at import time, which is `None` before
`init_process_group`, so it silently does not synchronise unless given the group explicitly.
On CPU (gloo), where inplace-abn's and torch's sync kernels are CUDA-only, `set_stats_reducer(model, fn)`
synchronises iabn_sync layers through a differentiable all-reduce the trainer hands in.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cdseg.errors import ConfigError

_log = logging.getLogger(__name__)

LEAKY_SLOPE = 0.01
ACTIVATIONS = ("leaky_relu", "relu", "identity")


@functools.cache
def inplace_abn_module() -> Any | None:
    """The `inplace_abn` package, or None (with a warning, once) when it cannot be imported."""
    try:
        import inplace_abn
    except Exception as exc:  # ImportError, or an OSError from a CUDA extension built for another torch
        _log.warning(
            "inplace-abn is not importable (%s); using cdseg's pure-PyTorch ABN instead (same parameters and "
            "numerics, more memory). To build it: SETUPTOOLS_SCM_PRETEND_VERSION=1.1.0 pip install "
            "--no-build-isolation inplace-abn==1.1.0",
            exc,
        )
        return None
    return inplace_abn


def make_activation(act: str) -> nn.Module:
    """The activation module for `act` (leaky_relu uses slope 0.01, as inplace-abn)."""
    if act == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
    if act == "relu":
        return nn.ReLU(inplace=True)
    if act == "identity":
        return nn.Identity()
    raise ConfigError(f"activation {act!r} is not supported; use one of {', '.join(ACTIVATIONS)}")


class ABN(nn.Module):
    """Pure-PyTorch activated batch norm: y = act(BN(x) with scale |w|+eps, shift b), as inplace-abn.

    Same parameters and buffers as `inplace_abn.ABN` (weight, bias, running_mean, running_var,
    num_batches_tracked), so checkpoints move freely between machines with and without inplace-abn.
    `group` set (by `convert_sync`) makes training-mode statistics synchronised over that process group.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        activation: str = "leaky_relu",
        activation_param: float = LEAKY_SLOPE,
        sync: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ("leaky_relu", "identity"):
            raise ConfigError(f"ABN activation {activation!r} is not supported; use leaky_relu or identity")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.activation = activation
        self.activation_param = activation_param
        self.sync = sync
        self.group: Any = None
        #: sums a tensor over processes, differentiably (set by `set_stats_reducer`, for CPU / gloo)
        self.reducer: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def set_group(self, group: Any) -> None:
        """Synchronise statistics over `group` (a torch ProcessGroup, or None for none)."""
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.abs() + self.eps
        if self.training:
            self.num_batches_tracked.add_(1)
        if self.training and self.reducer is not None:
            y = self._reduced_batch_norm(x, weight)
        # torch's sync kernels are CUDA-only: on CPU (gloo) use set_stats_reducer
        elif self.training and self.sync and self.group is not None and x.is_cuda and self.group.size() > 1:
            # torch's own SyncBatchNorm autograd function, fed the |w|+eps scale: same maths as InPlaceABNSync
            from torch.nn.modules._functions import SyncBatchNorm as _SyncBatchNormFn

            y = _SyncBatchNormFn.apply(
                x, weight, self.bias, self.running_mean, self.running_var, self.eps, self.momentum,
                self.group, self.group.size(),
            )
        else:
            y = F.batch_norm(
                x, self.running_mean, self.running_var, weight, self.bias, self.training, self.momentum, self.eps
            )
        if self.activation == "leaky_relu":
            return F.leaky_relu(y, self.activation_param, inplace=True)
        return y

    def _reduced_batch_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Training-mode BN whose statistics are summed over processes by `self.reducer` (any backend)."""
        assert self.reducer is not None
        dims = (0, 2, 3)
        xd = x.double()  # E[x^2] - E[x]^2 in float64: float32 would lose the digits Welford keeps
        count = torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=torch.float64, device=x.device)
        stats = self.reducer(torch.cat([xd.sum(dims), (xd * xd).sum(dims), count]))
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp(min=0)
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(mean.to(self.running_mean.dtype), alpha=self.momentum)
            unbiased = var * (n / (n - 1).clamp(min=1))
            self.running_var.mul_(1 - self.momentum).add_(unbiased.to(self.running_var.dtype), alpha=self.momentum)
        shape = (1, -1, 1, 1)
        scale = (weight.double() * torch.rsqrt(var + self.eps)).view(shape)
        return ((xd - mean.view(shape)) * scale + self.bias.double().view(shape)).to(x.dtype)

    def extra_repr(self) -> str:
        sync = ", sync" if self.sync else ""
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, activation={self.activation}{sync}"


def iabn_layer(channels: int, act: str, sync: bool) -> nn.Module:
    """An inplace-abn layer (real one when importable, else `ABN`) with the activation fused."""
    if act not in ("leaky_relu", "identity"):
        raise ConfigError(f"act={act!r} cannot be fused into an inplace-abn layer; use leaky_relu or identity")
    classes = _iabn_classes()
    if classes is None:
        return ABN(channels, activation=act, sync=sync)
    plain, synced = classes
    if sync:
        # group=None: no synchronisation until convert_sync(model, group) hands in the trainer's group
        return synced(channels, activation=act, activation_param=LEAKY_SLOPE, group=None)
    return plain(channels, activation=act, activation_param=LEAKY_SLOPE)


@functools.cache
def _iabn_classes() -> tuple[type[nn.Module], type[nn.Module]] | None:
    """inplace-abn's layers, made safe for bf16 autocast.

    Its kernels dispatch on float, double and half only, so a bf16 input (autocast) is promoted to float32
    first; the next convolution casts back under autocast. Same parameters and state as upstream.
    """
    iabn = inplace_abn_module()
    if iabn is None:
        return None

    def bf16_safe(base: type[nn.Module]) -> type[nn.Module]:
        def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
            return base.forward(self, x.float() if x.dtype == torch.bfloat16 else x)

        return type(base.__name__, (base,), {"forward": forward, "__module__": __name__})

    return bf16_safe(iabn.InPlaceABN), bf16_safe(iabn.InPlaceABNSync)


def norm_act(kind: str, channels: int, act: str) -> nn.Module:
    """Norm layer `kind` (bn, syncbn, iabn, iabn_sync) followed by activation `act`, as one module."""
    if kind in ("bn", "syncbn"):
        act_module = make_activation(act)
        if isinstance(act_module, nn.Identity):
            return nn.BatchNorm2d(channels)
        return nn.Sequential(nn.BatchNorm2d(channels), act_module)
    if kind in ("iabn", "iabn_sync"):
        return iabn_layer(channels, act, sync=kind == "iabn_sync")
    raise ConfigError(f"norm {kind!r} is not supported; use one of bn, syncbn, iabn, iabn_sync")


def convert_sync(model: nn.Module, group: Any, norm: str | None = None) -> nn.Module:
    """Make every normalisation layer of `model` synchronise its statistics over `group`; returns the model.

    Call it once, after `init_process_group` and before wrapping in DDP, with the process group to sync
    over (e.g. `torch.distributed.group.WORLD`). It handles all norm kinds: `syncbn` and `iabn_sync`
    convert every BatchNorm (the encoder's too; timm's BatchNormAct2d keeps its activation) to
    SyncBatchNorm and hand `group` to inplace-abn / ABN sync layers; `bn` and `iabn` are left as they are.
    Do not call torch's `SyncBatchNorm.convert_sync_batchnorm` on top: it would drop timm's fused
    activations and reset the group to WORLD. `norm` defaults to the model's own `cfg.norm`.
    """
    kind = norm or getattr(getattr(model, "cfg", None), "norm", None)
    if kind is None:
        raise ValueError("convert_sync needs norm= for a model without a ModelConfig (`cfg`)")
    if kind not in ("syncbn", "iabn_sync"):
        return model
    from timm.layers import convert_sync_batchnorm

    for module in model.modules():
        if isinstance(module, ABN) and module.sync or _is_iabn_sync(module):
            module.set_group(group)  # type: ignore[operator]
    _convert_bn(model, group, convert_sync_batchnorm)
    return model


def _convert_bn(module: nn.Module, group: Any, convert: Any) -> None:
    """Replace BatchNorm children by SyncBatchNorm (timm's converter keeps BatchNormAct2d's activation);
    layers that are already synchronised just get `group`, so calling this twice is harmless."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.SyncBatchNorm):
            child.process_group = group
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, convert(child, process_group=group))
        else:
            _convert_bn(child, group, convert)


def set_stats_reducer(model: nn.Module, reducer: Callable[[torch.Tensor], torch.Tensor]) -> nn.Module:
    """Synchronise every iabn_sync layer through `reducer` (for CPU / gloo, where the CUDA sync kernels fail).

    `reducer(t)` must return t summed over the processes, differentiably (e.g.
    `torch.distributed.nn.functional.all_reduce(t, group=g)`). inplace-abn sync layers are replaced by
    equivalent `ABN` layers (same state); ABN sync layers get the reducer. Returns the model.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ABN) and child.sync:
                child.reducer = reducer
            elif _is_iabn_sync(child):
                src: Any = child
                layer = ABN(src.num_features, src.eps, src.momentum, src.activation, src.activation_param, sync=True)
                layer.load_state_dict(child.state_dict())
                layer.to(src.weight.device)
                layer.train(child.training)
                layer.reducer = reducer
                setattr(parent, name, layer)
    return model


def _is_iabn_sync(module: nn.Module) -> bool:
    iabn = inplace_abn_module()
    return iabn is not None and isinstance(module, iabn.InPlaceABNSync)


def is_fused(module: nn.Module) -> bool:
    """Whether `module` is an activated norm (inplace-abn or ABN) whose activation is part of the layer."""
    iabn = inplace_abn_module()
    return isinstance(module, ABN) or (iabn is not None and isinstance(module, iabn.ABN))


def reset_import_cache() -> None:
    """Forget whether inplace-abn was importable (tests that simulate its absence call this)."""
    inplace_abn_module.cache_clear()
    _iabn_classes.cache_clear()
