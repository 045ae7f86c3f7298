"""Walk a pydantic model's leaf fields: dotted path, type, help text, and text parsing."""

from __future__ import annotations

import enum
import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo

from cdseg.errors import ConfigError


@dataclass(frozen=True)
class LeafField:
    """One option: its dotted path (`trainer.batch_size`), annotation and pydantic field info."""

    path: str
    annotation: Any
    info: FieldInfo

    @property
    def flag(self) -> str:
        """The command-line spelling, `--trainer.batch-size`."""
        return "--" + self.path.replace("_", "-")

    @property
    def flags(self) -> list[str]:
        """Every command-line spelling: `flag`, then the older ones its validation aliases give."""
        names = [self.flag]
        alias = self.info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        prefix = self.path.rsplit(".", 1)[0] + "." if "." in self.path else ""
        for choice in choices:
            if isinstance(choice, str) and choice != self.path.rsplit(".", 1)[-1]:
                flag = "--" + (prefix + choice).replace("_", "-")
                if flag not in names:
                    names.append(flag)
        return names

    @property
    def base_type(self) -> Any:
        """The annotation without `Optional[...]`."""
        return strip_optional(self.annotation)

    @property
    def is_bool(self) -> bool:
        return self.base_type is bool

    @property
    def choices(self) -> list[str] | None:
        """Allowed values for Literal / Enum fields."""
        tp = self.base_type
        if get_origin(tp) is Literal:
            return [str(a) for a in get_args(tp)]
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return [str(m.value) for m in tp]
        return None

    @property
    def is_list(self) -> bool:
        return get_origin(self.base_type) in (list, tuple, set)

    def parse_text(self, text: str, *, source: str) -> Any:
        """Turn a string from the CLI or env into a value pydantic will validate."""
        if self.is_bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{source}={text!r} is not a boolean; use true or false")
        if self.is_list:
            stripped = text.strip()
            if stripped.startswith("["):
                try:
                    return json.loads(stripped)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{source}={text!r} is not a JSON list; use a,b,c or [\"a\",\"b\"]") from exc
            return [item.strip() for item in stripped.split(",") if item.strip()]
        if text.strip().lower() in ("none", "null") and self.annotation is not self.base_type:
            return None
        if get_origin(self.base_type) is dict:
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{source}={text!r} is not a JSON object") from exc
        return text

    @property
    def help(self) -> str:
        """The field's description plus its default and choices."""
        desc = (self.info.description or "").strip()
        if self.info.is_required():
            return desc + " [required]"
        default = self.info.get_default(call_default_factory=True)
        if isinstance(default, enum.Enum):
            default = default.value
        if isinstance(default, Path):
            default = str(default)
        extra = f" [default: {default}]" if default not in (None, "", [], {}) else ""
        return desc + extra


def strip_optional(tp: Any) -> Any:
    """`Optional[X]` / `X | None` -> `X`."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_section(tp: Any) -> bool:
    tp = strip_optional(tp)
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def iter_leaf_fields(model: type[BaseModel], prefix: str = "") -> Iterator[LeafField]:
    """Yield every leaf field of `model`, depth first, in declaration order."""
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        path = f"{prefix}{name}"
        if _is_section(info.annotation):
            yield from iter_leaf_fields(strip_optional(info.annotation), prefix=path + ".")
        else:
            yield LeafField(path=path, annotation=info.annotation, info=info)
