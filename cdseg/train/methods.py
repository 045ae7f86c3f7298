"""Methods are recipes: `cdseg/train/recipes/<method>.yaml`, read from the package; the method list is theirs.

A method recipe is a YAML mapping with

    order: 30             where the method sits in lists (help, demo, docs): ascending
    teacher: true         whether the method reads the frozen step k-1 model (checked against its terms)
    head_init: mib        initialisation of the new head at step k >= 1: default, or mib (from the background row)
    previous: true        step k >= 1 starts from step k-1's weights (joint: false, trains from scratch)
    labels: incremental   incremental: the step's labels (new classes, the rest background); all_seen: every
                          training patch with every class seen up to the step labelled (joint)
    terms:                config sections of the loss terms (cdseg/losses/*) and the values it sets
      ce: {unbiased: true}
      kd: {unbiased: true, weight: 10.0}

Its values are presets: they sit below every value the user gives (YAML, env, CLI). Any other YAML file in
the folder (e.g. `paper-6s-split.yaml`, shared options for `--config`) is not a method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

HEAD_INITS = ("default", "mib")
LABELS = ("incremental", "all_seen")


@dataclass(frozen=True)
class Recipe:
    """One method: its terms' settings, head initialisation, teacher and starting point."""

    name: str
    order: int
    teacher: bool
    head_init: str
    previous: bool
    labels: str = "incremental"
    terms: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""


def _folder() -> Any:
    return resources.files("cdseg.train").joinpath("recipes")


@cache
def recipes() -> dict[str, Recipe]:
    """Every method recipe by name, in `order`."""
    found = []
    for entry in _folder().iterdir():
        if not entry.name.endswith(".yaml"):
            continue
        data = yaml.safe_load(entry.read_text()) or {}
        if not isinstance(data, dict) or "terms" not in data:
            continue  # shared options, not a method
        name = entry.name.removesuffix(".yaml")
        head_init = str(data.get("head_init", "default"))
        assert head_init in HEAD_INITS, f"recipe {name}: head_init {head_init!r} not in {HEAD_INITS}"
        labels = str(data.get("labels", "incremental"))
        assert labels in LABELS, f"recipe {name}: labels {labels!r} not in {LABELS}"
        terms = data.get("terms") or {}
        assert isinstance(terms, dict), f"recipe {name}: terms must map config sections to values"
        found.append(Recipe(name=name, order=int(data.get("order", 1000)), teacher=bool(data.get("teacher", False)),
                            head_init=head_init, previous=bool(data.get("previous", True)), labels=labels,
                            terms={k: dict(v or {}) for k, v in terms.items()},
                            description=str(data.get("description", ""))))
    return {r.name: r for r in sorted(found, key=lambda r: (r.order, r.name))}


def method_names() -> tuple[str, ...]:
    """The methods, in their recipes' order."""
    return tuple(recipes())


def recipe(method: str) -> Recipe:
    """The recipe of `method` (KeyError naming the choices when there is none)."""
    found = recipes()
    if method not in found:
        raise KeyError(f"unknown method {method!r}; choose from {', '.join(found)}")
    return found[method]
