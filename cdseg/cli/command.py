"""What a subcommand module exports: a `Command` naming its config model and the function to call."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class Command:
    """One `cdseg` subcommand.

    `config` is the root pydantic model whose leaf fields become `--section.field` options;
    `run` receives the validated config (and the parsed extra arguments, if `add_arguments` is set)
    and returns an exit code (None means 0).
    """

    name: str
    help: str
    config: type[BaseModel] | None
    run: Callable[..., int | None]
    description: str = ""
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    epilog: str = ""

    def invoke(self, config: Any, extra: argparse.Namespace) -> int:
        """Call `run`, passing the extra parsed arguments only when the command declared some."""
        if self.add_arguments is not None:
            rc = self.run(config, extra) if self.config is not None else self.run(extra)
        else:
            rc = self.run(config) if self.config is not None else self.run()
        return 0 if rc is None else int(rc)
