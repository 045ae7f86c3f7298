"""Benchmarks (`cdseg bench ...`): speed measured as ratios against a ceiling or baseline from the same run.

One module per area (`prepare`, `train`, `eval`, `storage`), each exporting its config model and a
run function; `cdseg/cli/bench.py` maps the subcommands to them.
"""
