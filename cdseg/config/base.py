"""Base class of every config section."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section: unknown keys are errors, values are validated on assignment too.

    A root config may define `presets` (a hook returning defaults chosen by the user's own values,
    e.g. a method recipe); preset values sit *below* anything the user set explicitly.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, protected_namespaces=())

    #: Options shown as top-level flags without a section prefix are ordinary fields; nothing to add.
    cli_hidden: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def presets(cls, user: dict[str, Any]) -> dict[str, Any]:
        """Defaults that depend on what the user chose (empty by default)."""
        return {}
