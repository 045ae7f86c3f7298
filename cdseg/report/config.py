"""`ReportConfig`: the options of `cdseg report`."""

from __future__ import annotations

from pydantic import Field, field_validator

from cdseg.config.base import Section
from cdseg.storage.config import StorageConfig


class ReportConfig(Section):
    """`cdseg report`: one Markdown + HTML report over the evaluations of several steps and methods."""

    inputs: list[str] = Field(..., description="metrics.json files, eval folders, or root folders searched for "
                              "*/eval/metrics.json (paths or URIs; comma-separated on the command line)")
    output: str = Field(..., description="report folder or URI (report.md, report.html, report.json, plots/)")
    title: str = Field("cdseg: class-incremental segmentation report", description="report title")
    storage: StorageConfig = Field(default_factory=StorageConfig)

    @field_validator("inputs")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one metrics.json, eval folder or root folder")
        return value
