"""The one lookup every registry at a seam (tasks, targets) uses."""
from __future__ import annotations

from .errors import ConfigError


def lookup(table: dict, name: str, what: str):
    """An instance of table[name], or one clear error naming the choices."""
    if name not in table:
        raise ConfigError(f"unknown {what} '{name}'; use one of {', '.join(table)}")
    return table[name]()
