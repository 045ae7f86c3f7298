"""`cdseg prepare`: an ISPRS release (or generated scenes) -> a prepared dataset."""

from __future__ import annotations

from cdseg.cli.command import Command
from cdseg.data.config import PrepareConfig


def _run(cfg: PrepareConfig) -> int:
    from cdseg.data.prepare import run_prepare

    print(run_prepare(cfg))
    return 0


COMMAND = Command(
    name="prepare",
    help="turn an ISPRS release (or generated scenes) into a prepared dataset",
    config=PrepareConfig,
    run=_run,
    description="Read the ISPRS Potsdam or Vaihingen release (zips or folders, local or s3://), convert label "
    "colours to class indices, split scenes into train/val/test, and write tiled GeoTIFFs with a manifest "
    "(statistics, per-patch class histograms, checksums). A rerun with the same inputs and options does nothing.",
    epilog="example: cdseg prepare --input data/synth --output data/prepared --patch-size 512 --workers 2",
)
