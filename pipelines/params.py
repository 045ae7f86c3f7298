"""Run arguments of the task pipeline: the parameters that left the run form, moved to where they live now.

Until 0.1.0 the form had 37 parameters; the rarely-changed ones are now keys of the one `config`
parameter (components.run_config.RunConfig) and `patience` / `crop_size` / `in_channels` are
`train_options` keys. `cdseg pipeline run` / `submit`, `cdseg demo` and `run_local` accept the old
names and move them, saying so; the KFP UI and `kfp run create` take only the new form.
"""

from __future__ import annotations

import logging
from typing import Any

from components import RECIPE_DEFAULT
from components.run_config import CONFIG_KEYS, parse_config

log = logging.getLogger("cdseg.pipelines")

#: former hyper-parameters -> the train_options key that sets the same TrainConfig option
MOVED_TO_TRAIN_OPTIONS: dict[str, str] = {
    "patience": "trainer.patience", "crop_size": "data.crop_size", "in_channels": "in_channels",
}


def migrate_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """`arguments` with former parameters moved into `config` / `train_options` (a note logged for each), and
    `config` validated (ConfigError: one line naming the key and the fix)."""
    from cdseg.errors import ConfigError

    args = dict(arguments)
    config = dict(args.pop("config", None) or {})
    train_options = dict(args.get("train_options") or {})
    for key in [k for k in args if k in CONFIG_KEYS]:
        if key in config:
            raise ConfigError(f"{key!r} is given both as a parameter and in config; keep config[{key!r}] only")
        config[key] = args.pop(key)
        log.warning("parameter %r is now config[%r]; moved it there", key, key)
    for key, dotted in MOVED_TO_TRAIN_OPTIONS.items():
        if key not in args:
            continue
        value = args.pop(key)
        if value == RECIPE_DEFAULT[dotted]:
            continue  # "the recipe's", as train_options without the key
        if dotted not in train_options:  # train_options won over the hyper-parameters before too
            train_options[dotted] = value
        log.warning("parameter %r is now train_options[%r]; moved it there", key, dotted)
    if train_options or "train_options" in args:
        args["train_options"] = train_options
    if config:
        parse_config(config)
        args["config"] = config
    return args
