"""Typed configuration: one pydantic definition per option, read from YAML, CLI and environment.

Section models live next to their owners (`cdseg.models.config`, `cdseg.train.config`, ...);
this package holds only the machinery shared by all of them.
"""

from cdseg.config.base import Section
from cdseg.config.loader import ENV_PREFIX, dump_config, load_config, save_config

__all__ = ["ENV_PREFIX", "Section", "dump_config", "load_config", "save_config"]
