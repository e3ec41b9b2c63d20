"""fusewatch configuration: one pydantic model per YAML section, loaded with line numbers.

`config.load_config(path)` is the single entry point; every part of the daemon reads the
frozen `FusewatchConfig` it returns.
"""

from config.loader import ConfigError, load_config, load_config_text
from config.schema import FusewatchConfig

__all__ = ["ConfigError", "FusewatchConfig", "load_config", "load_config_text"]
