"""Import optional heavy dependencies at the point of use, failing with the install command."""

from __future__ import annotations

import importlib
from types import ModuleType

from cdseg.errors import MissingDependencyError


def lazy_import(module: str, feature: str, install: str | None = None) -> ModuleType:
    """Import `module` or raise a `MissingDependencyError` that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = install or f"pip install {module.split('.')[0]}"
        raise MissingDependencyError(module, feature, hint) from exc
