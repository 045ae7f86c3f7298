"""`cdseg synth`: generated aerial scenes in the ISPRS release layout."""

from __future__ import annotations

from cdseg.cli.command import Command
from cdseg.data.config import SynthConfig


def _run(cfg: SynthConfig) -> int:
    from cdseg.data.synth_release import run_synth

    print(run_synth(cfg))
    return 0


COMMAND = Command(
    name="synth",
    help="generate aerial scenes in the ISPRS Potsdam/Vaihingen release layout",
    config=SynthConfig,
    run=_run,
    description="Generate learnable aerial scenes (roads, buildings with shadows, trees, cars, clutter) and write "
    "them exactly as the ISPRS release ships them, so that cdseg prepare reads them like the real data.",
    epilog="example: cdseg synth --output data/synth --size 1024 --train-scenes 4 --test-scenes 2 --zip",
)
