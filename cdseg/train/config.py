"""`TrainConfig` (root of `cdseg train`) and the trainer's own sections.

Method recipes (`--method`, one YAML file each in `recipes/`, listed by `cdseg.train.methods`) are applied
through `Section.presets`, so they sit *below* every value the user gave (YAML, env, CLI). The original
project's validators overwrote `--kd.decoder-factor`, `--ce.unbiased` and `--model.init-balanced` for every
method (seed-spec §1.4, bug 6); here an explicit value always wins.

Every loss term's config section (`cdseg.losses.registry.term_specs()`) is a field of `TrainConfig`: `ce`, `kd`
and `aug` are declared here (typed, other code reads them), the others are added from the term modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, create_model, field_validator, model_validator

from cdseg.config.base import Section
from cdseg.data.config import DataConfig
from cdseg.losses.config import AugConfig, CEConfig, KDConfig
from cdseg.losses.registry import step1_only_options, term_specs
from cdseg.metrics.config import MetricsConfig
from cdseg.models.config import ModelConfig
from cdseg.storage.config import StorageConfig
from cdseg.tasks.config import TaskConfig
from cdseg.train.methods import method_names, recipe

METHODS: tuple[str, ...] = method_names()
if TYPE_CHECKING:
    Method = str
else:
    Method = Literal[METHODS]
Metric = Literal["miou", "f1", "acc", "loss"]


class TrainerConfig(Section):
    """The loop: device, precision, batch, length, validation, early stopping, checkpoints, logging."""

    device: str = Field("auto", description="auto (cuda:LOCAL_RANK when CUDA is available, else cpu), cpu, cuda, cuda:N")
    amp: bool = Field(False, description="mixed precision autocast on CUDA (ignored with a warning on CPU)")
    amp_dtype: Literal["bf16", "fp16"] = Field("bf16", description="autocast dtype; fp16 adds a gradient scaler")
    batch_size: int = Field(8, ge=1, description="images per process per iteration (global batch = this x world size)")
    epochs: int = Field(100, ge=1, description="maximum number of epochs")
    max_iters: int = Field(0, ge=0, description="stop after this many iterations in total (0: no limit)")
    max_iters_by_step: dict[int, int] = Field(
        default_factory=dict, description="max_iters of particular steps, {step: iterations} (overrides max_iters "
        "there; 0: no limit), e.g. {\"2\": 320} for a last step whose new classes are rare")
    limit_batches: int = Field(0, ge=0, description="iterations per epoch at most (0: the whole loader; for CI)")
    limit_val_batches: int = Field(0, ge=0, description="validation batches per rank at most (0: all)")
    validate_every: int = Field(1, ge=1, description="validate every N epochs (and after the last one)")
    monitor: Metric = Field("miou", description="validation metric for best checkpoint and early stopping "
                            "(old AND new classes; loss is minimised, the others maximised)")
    patience: int = Field(25, ge=0, description="validations without improvement before stopping (0: never stop)")
    min_delta: float = Field(0.0, ge=0, description="smallest change of --trainer.monitor that counts as improvement")
    restore_best: bool = Field(True, description="the step's final model is the best validated one, not the last")
    grad_clip: float = Field(0.0, ge=0, description="clip the global gradient L2 norm to this value (0: off)")
    channels_last: Literal["auto", "on", "off"] = Field("auto", description="channels_last memory format (auto: on CUDA)")
    compile: bool = Field(False, description="torch.compile the student model")
    init_balanced: bool = Field(False, description="MiB initialisation of the new head from the background row "
                                "(set by the mib and mib-cd recipes)")
    cd_single_forward: bool = Field(True, description="contrastive methods: push x and g(x) through the student in "
                                    "one 2B forward (false: two forwards as the original; single process only)")
    log_every: int = Field(10, ge=1, description="report losses, lr, throughput and data-wait every N iterations")
    checkpoint_every_iters: int = Field(0, ge=0, description="also write resume state every N iterations mid-epoch "
                                        "(0: at epoch ends only)")
    resume: bool = Field(True, description="resume from <output>/step-<k>/resume when it holds a complete state")
    keep_remote_resume: int = Field(2, ge=1, description="resume states kept in an s3:// output (the newest; older "
                                                        "ones are deleted once a newer one is committed)")
    deterministic: bool = Field(False, description="deterministic algorithms (cudnn) at some speed cost")

    @field_validator("max_iters_by_step")
    @classmethod
    def _by_step(cls, value: dict[int, int]) -> dict[int, int]:
        bad = {k: v for k, v in value.items() if k < 0 or v < 0}
        if bad:
            raise ValueError(f"steps and iterations must be >= 0, got {bad}")
        return dict(sorted(value.items()))

    def iters_at(self, step: int) -> int:
        """max_iters of `step` (0: no limit)."""
        return self.max_iters_by_step.get(step, self.max_iters)


class OptimizerConfig(Section):
    """One parameter group over the student, as in the original (encoder, decoder and heads share the LR)."""

    target: Literal["adamw", "adam", "sgd"] = Field("adamw", description="optimizer")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (after warm-up)")
    weight_decay: float = Field(1e-2, ge=0, description="weight decay (decoupled for adamw)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (sgd only)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas")


class SchedulerConfig(Section):
    """Learning-rate schedule, stepped every iteration over the whole run (fixes the original's periodic cosine)."""

    target: Literal["cosine", "poly", "exp", "constant"] = Field(
        "cosine", description="cosine: lr -> min_lr over the run; poly: (1-t)^power; exp: x gamma per epoch; constant")
    warmup_iters: int = Field(0, ge=0, description="linear warm-up iterations from warmup_factor x lr to lr")
    warmup_factor: float = Field(0.001, gt=0, le=1, description="lr multiplier at iteration 0 of the warm-up")
    min_lr: float = Field(0.0, ge=0, description="final learning rate of cosine / poly")
    power: float = Field(0.9, gt=0, description="exponent of poly")
    gamma: float = Field(0.96, gt=0, le=1, description="decay per epoch of exp (applied smoothly per iteration)")


#: TrainConfig options that only act from step 1 on (teacher, unbiased losses, head init, invariance against the
#: old model) or do not change what is trained: two configs differing only in these train step 0 identically.
STEP1_ONLY = ("method", "model.init_balanced", "trainer.init_balanced", "prev_checkpoint", "output", "name",
              "comment", *step1_only_options())


def step0_fingerprint(cfg: TrainConfig) -> str:
    """What step 0 of `cfg` trains with: its resolved options without STEP1_ONLY (JSON, sorted keys)."""
    import json

    def flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                flat(f"{prefix}.{k}" if prefix else k, v, out)
        else:
            out[prefix] = value

    dumped: dict[str, Any] = {}
    flat("", cfg.model_copy(update={"task": cfg.task.model_copy(update={"step": 0})}).model_dump(mode="json"), dumped)
    # a term section that does not act at step 0 as configured (mib-cd's with aug.from_step=1) changes nothing there
    idle = tuple(spec.section for spec in term_specs()
                 if spec.acts_at_step0 is not None and not spec.acts_at_step0(getattr(cfg, spec.section)))
    kept = {k: v for k, v in dumped.items() if not any(k == s or k.startswith(s + ".") for s in (*STEP1_ONLY, *idle))}
    # the budget step 0 actually gets: {"2": 320} in max_iters_by_step changes no step-0 training
    kept = {k: v for k, v in kept.items() if not k.startswith("trainer.max_iters_by_step.")}
    kept["trainer.max_iters"] = cfg.trainer.iters_at(0)
    return json.dumps(kept, sort_keys=True, default=str)


_DECLARED = ("ce", "kd", "aug")


def _term_sections() -> dict[str, Any]:
    return {spec.section: (spec.config, Field(default_factory=spec.config, description=spec.description))
            for spec in term_specs() if spec.section not in _DECLARED}


if TYPE_CHECKING:
    _TermSections = Section
else:
    _TermSections = create_model("_TermSections", __base__=Section, **_term_sections())


class TrainConfig(_TermSections):
    """`cdseg train`: one incremental step; writes `<output>/step-<k>/`."""

    method: Method = Field("mib", description=f"method recipe: {', '.join(METHODS)} (defaults of the loss terms' "
                           "sections and the head init; explicit options win)")
    output: str = Field("outputs/run", description="run folder or s3:// URI; this step writes <output>/step-<k>/")
    prev_checkpoint: str | None = Field(None, description="step k-1's model folder or URI (default: "
                                        "<output>/step-<k-1>/model)")
    in_channels: int | None = Field(3, ge=1, description="use the first N bands of the prepared dataset (3 = RGB "
                                    "from RGBIR); none: --data.bands or every band")
    seed: int = Field(1337, description="seed of weights init, data order and augmentation (per rank: seed + rank)")
    name: str | None = Field(None, description="experiment name (labels logs, metrics and the model card)")
    comment: str = Field("", description="free text stored in the model card and config.yaml")
    data: DataConfig = Field(default_factory=DataConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    ce: CEConfig = Field(default_factory=CEConfig)
    kd: KDConfig = Field(default_factory=KDConfig)
    aug: AugConfig = Field(default_factory=AugConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @staticmethod
    def uses_previous_checkpoint(method: str) -> bool:
        """Whether `method` starts step k > 0 from step k-1's checkpoint (joint trains every step from scratch)."""
        return recipe(method).previous

    @classmethod
    def presets(cls, user: dict[str, Any]) -> dict[str, Any]:
        """The `--method` recipe's term settings and head init, restricted to fields the sections really have."""
        method = user.get("method", cls.model_fields["method"].default)
        if method not in METHODS:
            return {}  # validation reports the bad method with the allowed values
        r = recipe(method)
        out: dict[str, Any] = {"trainer": {"init_balanced": r.head_init == "mib"}}
        for section, values in r.terms.items():
            info = cls.model_fields.get(section)
            assert info is not None, f"recipe {method}: no loss term has the config section {section!r}"
            fields = getattr(info.annotation, "model_fields", {})
            unknown = set(values) - set(fields)
            assert not unknown, f"recipe {method}: section {section} has no option(s) {sorted(unknown)}"
            if values:
                out[section] = dict(values)
        return out

    @field_validator("prev_checkpoint")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.prev_checkpoint and not recipe(self.method).previous:
            raise ValueError(f"--prev-checkpoint={self.prev_checkpoint!r} is not used by --method {self.method} (it "
                             "trains every class up to --task.step from scratch); drop it")
        return self
