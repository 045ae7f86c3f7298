"""The loss terms: every module of `cdseg.losses` that defines `TERM` (a `TermSpec`), found by listing the package.

Adding a term is adding a module; nothing here names one. `TrainConfig` gets one section per term from
`term_specs()`, and the method step builds the active ones with `build_terms`.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

from cdseg.losses.term import StepInfo, Term, TermSpec


@cache
def term_specs() -> tuple[TermSpec, ...]:
    """Every term module's spec, in run order (then section name)."""
    import cdseg.losses as package

    specs = []
    for mod in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{mod.name}")
        spec = getattr(module, "TERM", None)
        if isinstance(spec, TermSpec):
            specs.append(spec)
    sections = [s.section for s in specs]
    dupes = sorted({s for s in sections if sections.count(s) > 1})
    assert not dupes, f"two term modules claim the config section(s) {dupes}"
    return tuple(sorted(specs, key=lambda s: (s.order, s.section)))


def spec_of(section: str) -> TermSpec:
    """The spec whose config section is `section`."""
    for spec in term_specs():
        if spec.section == section:
            return spec
    raise KeyError(f"no loss term has the config section {section!r}")


def build_terms(sections: Any, info: StepInfo) -> list[Term]:
    """The active terms of a step: each spec's `build(getattr(sections, spec.section), info)` that is not None.

    `sections` is anything with one attribute per term section (a `TrainConfig`).
    """
    terms = []
    for spec in term_specs():
        term = spec.build(getattr(sections, spec.section), info)
        if term is not None:
            terms.append(term)
    return terms


def step1_only_options() -> tuple[str, ...]:
    """Dotted options of the term sections that do not change what step 0 trains."""
    out: list[str] = []
    for spec in term_specs():
        if spec.step1_only is None:
            out.append(spec.section)
        else:
            out.extend(f"{spec.section}.{name}" for name in spec.step1_only)
    return tuple(out)
