"""`cdseg experiment`'s options: the grid (tasks x methods or variants x seeds) and how each run trains."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cdseg.config import Section
from cdseg.evaluate.config import EvalOptions
from cdseg.train.config import METHODS


class ExperimentConfig(Section):
    """`cdseg experiment`: train and test every cell of the grid, then one report with statistics over seeds."""

    dataset: str = Field(..., description="prepared dataset folder or URI (cdseg prepare)")
    output: str = Field("outputs/experiment", description="folder of the runs (runs/<task>/<name>/seed-<s>/) and "
                        "the report (report/)")
    tasks: list[str] = Field(default_factory=lambda: ["222a"], description="tasks to run, e.g. 222a,321")
    methods: list[str] = Field(default_factory=lambda: ["ft", "mib", "mib-cd"], description="methods or variants "
                               "(a method, or method+name defined in --variants), e.g. ft,mib,mib-cd,mib-cd+feature-dropout")
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict, description="named variants (JSON): "
                                                "{\"mib-cd+feature-dropout\": {\"model.feature_dropout\": true}}; "
                                                "the part before + is the method")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="training seeds; each seed is one "
                             "run of every method (paired comparisons use the seeds every method finished)")
    steps: int = Field(0, ge=0, description="incremental steps to run per task (0: every step of the task)")
    train_options: dict[str, Any] = Field(default_factory=dict, description="TrainConfig options of every run "
                                          "(JSON, dotted keys), e.g. {\"trainer.max_iters\": 320}")
    eval: EvalOptions = Field(default_factory=EvalOptions)
    split: Literal["test", "val", "train"] = Field("test", description="split the runs are scored on (choose settings on val, report test)")
    workers: int = Field(1, ge=1, description="runs trained at once, each in its own process (1: in this process)")
    share_step0: bool = Field(True, description="train step 0 once per task and seed for methods whose step 0 is "
                              "identical (ft, uft and mib share one, mib-cd and ft-cd another: their step 0 adds the invariance term)")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="level of the confidence intervals")

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one method")
        if len(set(value)) != len(value):
            raise ValueError(f"--methods {','.join(value)} names one twice")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"--seeds {value} must name at least one seed, each once")
        return value

    @model_validator(mode="after")
    def _names(self) -> ExperimentConfig:
        for name in self.methods:
            method = self.method_of(name)
            if method not in METHODS:
                raise ValueError(f"method {method!r} (of {name!r}) is unknown; choose from {', '.join(METHODS)}")
            if "+" in name and name not in self.variants:
                raise ValueError(f"variant {name!r} is not defined; add it to --variants, e.g. "
                                 f"'{{\"{name}\": {{\"model.feature_dropout\": true}}}}'")
        for name, options in self.variants.items():
            bad = [k for k in options if k in RESERVED]
            if bad:
                raise ValueError(f"variant {name!r} sets {bad}; the experiment sets those per run")
        bad = [k for k in self.train_options if k in RESERVED]
        if bad:
            raise ValueError(f"--train-options sets {bad}; the experiment sets those per run (use --seeds, --tasks)")
        return self

    @staticmethod
    def method_of(name: str) -> str:
        """The method of a grid name (`mib-cd+feature-dropout` -> `mib-cd`)."""
        return name.split("+", 1)[0]

    def options_of(self, name: str) -> dict[str, Any]:
        """The TrainConfig options of a grid name: --train-options, then its variant's."""
        return {**self.train_options, **self.variants.get(name, {})}


#: TrainConfig options the experiment sets for each run
RESERVED = ("method", "seed", "task.name", "task.step", "data.dataset", "output", "prev_checkpoint")
