"""Parse a command's `--section.field value` arguments into dotted values, without argparse (for code that
holds another command's arguments, e.g. the launcher resolving `cdseg train`'s into a config file)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from cdseg.config.fields import LeafField, iter_leaf_fields
from cdseg.errors import ConfigError


def parse_args(model: type[BaseModel], args: Sequence[str], command: str) -> tuple[str | None, dict[str, Any]]:
    """(`--config` file or None, {dotted option: value}) of `args`, spelled as `cdseg <command>` takes them:
    `--a.b value`, `--a.b=value`, `--flag` / `--no-flag`; an unknown option is a `ConfigError` naming it."""
    by_flag: dict[str, tuple[LeafField, bool]] = {}
    for field in iter_leaf_fields(model):
        for spelling in field.flags:
            by_flag[spelling] = (field, True)
            if field.is_bool:
                by_flag["--no-" + spelling[2:]] = (field, False)
    config_file: str | None = None
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        word = args[i]
        flag, eq, inline = word.partition("=")
        if flag == "--config" or flag in by_flag:
            entry = by_flag.get(flag)
            leaf: LeafField | None = entry[0] if entry is not None else None
            truth = entry[1] if entry is not None else True
            if leaf is not None and leaf.is_bool and not eq:
                values[leaf.path] = truth
                i += 1
                continue
            if eq:
                text = inline
            elif i + 1 < len(args):
                text = args[i + 1]
                i += 1
            else:
                raise ConfigError(f"{command} argument {flag} needs a value; give one after it")
            if leaf is None:
                config_file = text
            else:
                values[leaf.path] = leaf.parse_text(text, source=flag)
            i += 1
            continue
        raise ConfigError(f"{word!r} is not an option of cdseg {command}; check the spelling "
                          f"(cdseg {command} --help lists them)")
    return config_file, values
