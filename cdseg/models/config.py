"""`ModelConfig`: the segmentation model's options (encoder, weights, normalisation layers, head)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cdseg.config import Section

NormKind = Literal["bn", "syncbn", "iabn", "iabn_sync"]
ActKind = Literal["leaky_relu", "relu", "identity"]

#: spellings of the original project (`saticl`) accepted on input, mapped to ours
NORM_ALIASES = {"std": "bn", "batchnorm": "bn", "sync_bn": "syncbn", "inplace_abn": "iabn", "iabn-sync": "iabn_sync"}
ACT_ALIASES = {"lrelu": "leaky_relu", "leakyrelu": "leaky_relu", "ident": "identity", "none": "identity"}
IABN_KINDS = ("iabn", "iabn_sync")
SYNC_KINDS = ("syncbn", "iabn_sync")


class ModelConfig(Section):
    """The segmenter: a timm encoder, a residual UNet decoder, one 1x1 classifier head per step."""

    encoder: str = Field(
        default="tresnet_m",
        description="timm model name used as the encoder (features_only); e.g. tresnet_m (the paper), resnet18 for CPU runs",
    )
    pretrained: bool = Field(
        default=True,
        description="start the encoder from its timm pretrained weights (read from the local timm/Hugging Face cache; "
        "offline clusters: see --model.weights)",
    )
    weights: str | None = Field(
        default=None,
        description="local path or s3:// URI of an encoder weights file (timm state dict, .safetensors or .pth) "
        "used instead of the hub; implies pretrained normalisation",
    )
    norm: NormKind = Field(
        default="iabn_sync",
        description="decoder normalisation layer: bn, syncbn (torch SyncBatchNorm under DDP), iabn (inplace-abn), "
        "iabn_sync (inplace-abn synchronised across the trainer's process group); original spelling 'std' = bn",
    )
    act: ActKind = Field(
        default="leaky_relu",
        description="activation after every decoder normalisation layer (slope 0.01 for leaky_relu); fused into the "
        "layer for iabn kinds, which support leaky_relu and identity only; aliases lrelu, ident",
    )
    decoder_channels: list[int] | None = Field(
        default=None,
        description="output channels of each decoder block, deepest first (one per encoder level but the deepest); "
        "default: the encoder's skip widths, as the original",
    )
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0, description="dropout probability before the classifier heads")
    dropout2d: bool = Field(default=False, description="use channel-wise Dropout2d instead of element-wise Dropout")
    feature_dropout: bool = Field(
        default=False,
        description="return the features for the contrastive term after dropout (the original did; off by default "
        "because two independent dropout masks give the feature MSE a floor that rewards shrinking features)",
    )
    channels_last: bool = Field(default=False, description="store the model's weights in channels_last memory format")

    @field_validator("norm", mode="before")
    @classmethod
    def _norm_alias(cls, value: Any) -> Any:
        if isinstance(value, str):
            low = value.strip().lower()
            return NORM_ALIASES.get(low, low)
        return value

    @model_validator(mode="before")
    @classmethod
    def _act_alias(cls, data: Any) -> Any:
        # The original scripts say `--model.norm iabn_sync --model.act ident`, meaning "iABN's own
        # leaky_relu(0.01) and no extra activation module" (saticl forced act=ident for iabn). Our `act` is
        # the activation fused into the iABN layer, so the original spelling `ident` with an iabn norm is
        # translated to what it meant, leaky_relu. The spelling `identity` is taken literally (linear iABN).
        if not isinstance(data, dict) or not isinstance(data.get("act"), str):
            return data
        data = dict(data)
        act = data["act"].strip().lower()
        norm = data.get("norm", "iabn_sync")
        norm = NORM_ALIASES.get(norm.strip().lower(), norm.strip().lower()) if isinstance(norm, str) else norm
        if act == "ident" and norm in IABN_KINDS:
            act = "leaky_relu"
        data["act"] = ACT_ALIASES.get(act, act)
        return data

    @field_validator("decoder_channels")
    @classmethod
    def _positive_channels(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or any(c <= 0 for c in value)):
            raise ValueError(f"decoder_channels={value} must be a non-empty list of positive integers (or unset)")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> ModelConfig:
        if self.norm in IABN_KINDS and self.act == "relu":
            raise ValueError(
                f"act='relu' cannot be fused into norm={self.norm!r} (inplace-abn supports leaky_relu and identity); "
                "use --model.act leaky_relu or --model.norm bn"
            )
        if self.weights and not self.pretrained:
            raise ValueError(
                f"weights={self.weights!r} with pretrained=false is contradictory; drop --model.weights for a random "
                "init, or set --model.pretrained true"
            )
        return self

    @property
    def uses_pretrained(self) -> bool:
        """Whether the encoder starts from pretrained weights (hub cache or `weights` file)."""
        return bool(self.pretrained or self.weights)
