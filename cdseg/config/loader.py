"""Resolve a config from defaults < presets < YAML file < `CDSEG_*` env vars < command line.

Command-line and env keys are dotted paths (`trainer.batch_size`); env vars spell them
`CDSEG_TRAINER__BATCH_SIZE` (sections separated by a double underscore). Only variables that name
a real field are read, so a stray `NAME` or `SEED` in a pod's environment never leaks in (a bug of
the original project, whose settings read bare variable names).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from cdseg.config.fields import iter_leaf_fields
from cdseg.errors import ConfigError

ENV_PREFIX = "CDSEG_"
M = TypeVar("M", bound=BaseModel)


def deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` updated recursively with `top` (inputs are not modified)."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `tree[a][b][c] = value` for `dotted == "a.b.c"`."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML ({str(exc).splitlines()[0]}); fix the syntax") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def env_overrides(model: type[BaseModel], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Values for `model`'s fields from `CDSEG_SECTION__FIELD` environment variables."""
    environ = os.environ if environ is None else environ
    tree: dict[str, Any] = {}
    for leaf in iter_leaf_fields(model):
        var = ENV_PREFIX + leaf.path.replace(".", "__").upper()
        if var in environ:
            set_dotted(tree, leaf.path, leaf.parse_text(environ[var], source=f"environment variable {var}"))
    return tree


def load_config(
    model: type[M],
    *,
    config_file: str | Path | None = None,
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    base: Mapping[str, Any] | None = None,
) -> M:
    """Build and validate `model` from every source; errors name the option and the fix."""
    user: dict[str, Any] = dict(base or {})
    if config_file:
        user = deep_merge(user, read_yaml(config_file))
    user = deep_merge(user, env_overrides(model, environ))
    # a bad value that came from the environment is reported under the variable's name, not the flag's
    env = os.environ if environ is None else environ
    names = {leaf.path: var for leaf in iter_leaf_fields(model)
             if (var := ENV_PREFIX + leaf.path.replace(".", "__").upper()) in env and leaf.path not in (cli or {})}
    cli_tree: dict[str, Any] = {}
    for dotted, value in (cli or {}).items():
        set_dotted(cli_tree, dotted, value)
    user = deep_merge(user, cli_tree)
    presets = getattr(model, "presets", None)
    data = deep_merge(presets(user), user) if callable(presets) else user
    return validate(model, data, names)


def validate(model: type[M], data: Mapping[str, Any], names: Mapping[str, str] | None = None) -> M:
    """`model.model_validate(data)`, with pydantic's report turned into one readable line.

    `names` maps a dotted option to how the user gave it when that was not a flag (an environment variable).
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, names)) from exc


def format_validation_error(exc: ValidationError, names: Mapping[str, str] | None = None) -> str:
    """One line per problem, joined with '; ': option, bad value, what is allowed."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or True)
        flag = (names or {}).get(loc) or ("--" + loc.replace("_", "-") if loc else "config")
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown option {flag}; check the spelling (cdseg <command> --help lists them)")
            continue
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f"={value}" if isinstance(value, str) else f"={value!r}"
        parts.append(f"invalid {flag}{shown}: {err['msg']}")
    return "; ".join(parts)


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML (what was actually used, saved beside every output)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: BaseModel, path: str | Path) -> None:
    """Write the resolved config to a local path atomically."""
    from cdseg.utils.atomic import write_text_atomic

    write_text_atomic(Path(path), dump_config(config))
