"""Benchmarks (`cdseg bench ...`): speed measured as ratios against a ceiling or baseline from the same run.

One module per area (`prepare`, `train`, `eval`, `storage`, `ddp`, and `gpu`, which runs them as the one
GPU check), each exporting its config model and a run function; `cdseg/cli/bench.py` maps the subcommands
to them. Shared by all: `timing` (interleaved rounds, per-round ratios), `memory` (peak memory of a call),
`loader` (the training loader's side of `bench train --loader`).
"""
