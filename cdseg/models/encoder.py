"""The encoder: any timm model by name, `features_only`, any number of input bands, offline-friendly weights.

Pretrained weights come from, in order: `model.weights` (a local path or s3:// URI of a timm state dict,
.safetensors or .pth), or the local timm / Hugging Face cache. Nothing is downloaded when the
environment says it is offline (`HF_HUB_OFFLINE=1`); a missing file is then a `UserError` that says how
to provide it.

More than 3 bands: the pretrained model is built with 3 input channels (timm's loader), then its first
convolution is adapted with timm's rule (input channel i takes the pretrained filter of channel i mod 3,
all scaled by 3/bands) *per space-to-depth block*: TResNet's stem sees SpaceToDepth output, whose
channels are ordered (block position, band), so the 48 pretrained inputs are 16 blocks of (R, G, B).
The original appended the first 16 of the 48 filters instead, which scrambled the stem (seed bug 12);
timm 1.0's own adapter refuses this stem and falls back to a random init.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdseg import storage
from cdseg.errors import CheckpointError, ConfigError, UserError
from cdseg.models.config import ModelConfig

_log = logging.getLogger(__name__)

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CDSEG_OFFLINE")


def create_encoder(cfg: ModelConfig, in_chans: int) -> tuple[nn.Module, dict[str, Any] | None]:
    """Build the timm feature extractor for `in_chans` bands; returns it and the weights' pretrained_cfg
    (None without pretrained weights). The encoder has `feature_info.channels()` / `.reduction()`."""
    import timm

    _check_name(cfg.encoder)
    if not cfg.uses_pretrained:
        return _create(cfg.encoder, in_chans=in_chans), None
    weights_file = _weights_file(cfg)
    overlay = {"file": str(weights_file)} if weights_file is not None else None
    try:
        base = _create(cfg.encoder, in_chans=3, pretrained=True, pretrained_cfg_overlay=overlay)
    except UserError:
        raise
    except Exception as exc:  # timm / hub / torch.load failures: say what to do
        if cfg.weights:
            raise CheckpointError(_weights_file_error(cfg.weights, cfg.encoder, exc)) from exc
        raise CheckpointError(
            f"could not load pretrained weights for encoder {cfg.encoder!r} from the timm / Hugging Face hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); {_fix_hint(cfg.encoder)}"
        ) from exc
    pretrained_cfg = getattr(base, "pretrained_cfg", None)
    if not pretrained_cfg:
        found = timm.models.get_pretrained_cfg(cfg.encoder)
        pretrained_cfg = found.to_dict() if found is not None else {"mean": (0.0,) * 3, "std": (1.0,) * 3}
    pretrained_cfg = dict(pretrained_cfg)
    if in_chans == 3:
        return base, pretrained_cfg
    encoder = _create(cfg.encoder, in_chans=in_chans)
    encoder.load_state_dict(adapt_state_dict(base.state_dict(), encoder.state_dict(), in_chans))
    _log.info("adapted the pretrained first layer of %s from 3 to %d input bands", cfg.encoder, in_chans)
    return encoder, pretrained_cfg


def adapt_first_conv(weight: torch.Tensor, in_chans: int, base_chans: int = 3) -> torch.Tensor:
    """Adapt first-conv weights [O, g*base, kh, kw] to [O, g*in_chans, kh, kw], g space-to-depth blocks.

    Within each block, input channel i takes base filter i mod base_chans, all scaled by base/in_chans
    (timm's rule, so activations keep their magnitude for inputs whose extra bands resemble the first ones).
    """
    out_ch, total, kh, kw = weight.shape
    if total % base_chans:
        raise ValueError(f"first conv has {total} inputs, not a multiple of {base_chans}")
    blocks = total // base_chans
    grouped = weight.float().reshape(out_ch, blocks, base_chans, kh, kw)
    index = torch.arange(in_chans) % base_chans
    adapted = grouped[:, :, index] * (base_chans / in_chans)
    return adapted.reshape(out_ch, blocks * in_chans, kh, kw).to(weight.dtype)


def adapt_state_dict(base: dict[str, torch.Tensor], target: dict[str, torch.Tensor], in_chans: int) -> dict[str, torch.Tensor]:
    """`base` (a 3-band encoder's state) reshaped to `target`'s: input convs adapted, the rest must match."""
    out = {}
    for key, value in target.items():
        src = base.get(key)
        if src is None:
            raise CheckpointError(f"pretrained encoder state has no {key!r}; cannot adapt it to {in_chans} bands")
        if src.shape != value.shape:
            if src.ndim == 4 and value.ndim == 4 and src.shape[0] == value.shape[0] and src.shape[2:] == value.shape[2:] \
                    and src.shape[1] * in_chans == value.shape[1] * 3:
                src = adapt_first_conv(src, in_chans)
            else:
                raise CheckpointError(
                    f"cannot adapt pretrained {key!r} of shape {tuple(src.shape)} to {tuple(value.shape)} "
                    f"for {in_chans} bands"
                )
        out[key] = src
    return out


def _create(name: str, *, in_chans: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    import timm

    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return timm.create_model(name, pretrained=pretrained, features_only=True, in_chans=in_chans, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ConfigError(_unknown(name)) from exc
        raise
    except (TypeError, AssertionError) as exc:
        if not pretrained:
            raise ConfigError(f"--model.encoder={name!r} cannot be used as a feature encoder ({exc})") from exc
        raise


def _check_name(name: str) -> None:
    import timm

    arch = name.split(".")[0]
    if not timm.is_model(arch):
        raise ConfigError(_unknown(name))


def _unknown(name: str) -> str:
    import timm

    arch = name.split(".")[0]
    near = timm.list_models(f"*{arch[:6]}*")[:8]
    hint = f" (similar: {', '.join(near)})" if near else ""
    return f"--model.encoder={name!r} is not a timm model{hint}; use a name from timm.list_models()"


def _offline() -> bool:
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on") for var in _OFFLINE_VARS)


def _fix_hint(name: str) -> str:
    return (
        f"fix: run `python -c \"import timm; timm.create_model('{name}', pretrained=True)\"` once where the network "
        "is reachable and copy the Hugging Face cache (HF_HOME) here, or pass --model.weights <path or s3:// URI of "
        "the weights file>, or train from scratch with --model.pretrained false"
    )


def _weights_file(cfg: ModelConfig) -> Path | None:
    """A local file holding the weights, or None to let timm fetch them (online only)."""
    if cfg.weights:
        return _local_weights(cfg.weights)
    cached = cached_pretrained_file(cfg.encoder)
    if cached is not None:
        return cached
    if _offline():
        raise UserError(f"pretrained weights for encoder {cfg.encoder!r} are not in the local cache and the "
                        f"environment is offline; {_fix_hint(cfg.encoder)}")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    proxied = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
    if not proxied and not _reachable(endpoint):
        # fail now rather than after the hub client's minute of retries (once per rank)
        raise UserError(f"pretrained weights for encoder {cfg.encoder!r} are not in the local cache and {endpoint} "
                        f"cannot be reached; {_fix_hint(cfg.encoder)}")
    return None


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to `url`'s host opens within `timeout` seconds."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _weights_file_error(uri: str, encoder: str, exc: BaseException) -> str:
    """One line for a --model.weights file that could not be loaded, with the fix that applies to it."""
    import pickle

    text = " ".join(str(exc).split())
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text:
        # torch's own advice (weights_only=False) is not an option: cdseg never unpickles arbitrary objects
        detail = text.split(" No automatic")[0].split(" If this checkpoint")[0].split(" Please file")[0][:200]
        return (f"--model.weights={uri!r} holds pickled Python objects, not only tensors ({detail}); cdseg does not "
                "unpickle them (that runs arbitrary code): save the encoder's state_dict as .safetensors, or as a .pth "
                "of tensors only")
    return (f"--model.weights={uri!r} could not be loaded as weights of encoder {encoder!r} ({type(exc).__name__}: "
            f"{text[:200]}); pass a .safetensors or .pth state_dict of that encoder")


def _local_weights(uri: str) -> Path:
    if storage.is_remote(uri):  # the one URI parser: `S3://` is remote, an unknown scheme is a one-line error
        return Path(storage.local_file(uri))
    path = storage.local_path(uri)
    if not path.is_file():
        raise ConfigError(f"--model.weights={uri!r} does not exist; pass an existing weights file (.safetensors or .pth)")
    return path


def cached_pretrained_file(name: str) -> Path | None:
    """The locally cached pretrained weights file of timm model `name` (Hugging Face or torch hub cache)."""
    import timm

    try:
        pcfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except Exception:
        pcfg = None
    if pcfg is None:
        return None
    cfg = pcfg.to_dict()
    if cfg.get("file") and Path(cfg["file"]).is_file():
        return Path(cfg["file"])
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None  # type: ignore[assignment]
        if try_to_load_from_cache is not None:
            repo, _, revision = hub_id.partition("@")
            names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
            for filename in names:
                found = try_to_load_from_cache(repo, filename, revision=revision or None)
                if isinstance(found, str) and Path(found).is_file():
                    return Path(found)
    url = cfg.get("url")
    if url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
        if candidate.is_file():
            return candidate
    return None
