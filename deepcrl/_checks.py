"""The one style of config checks: each config's `__post_init__` calls these, and the first bad field raises
`DeepcrlError` with one sentence naming its flag (so tyro's parse and a library caller get the same error)."""

from __future__ import annotations

from typing import Any

from deepcrl.errors import DeepcrlError


def flag(name: str) -> str:
    """A config field's command-line flag: ``max_batch_size`` -> ``--max-batch-size``."""
    return "--" + name.replace("_", "-")


def positive(config: Any, *names: str) -> None:
    """Each named field that is set (not None) must be greater than 0."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise DeepcrlError(f"{flag(name)} must be positive, got {value}.")


def at_least(config: Any, low: float, *names: str) -> None:
    """Each named field that is set must be at least `low`."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not value >= low:
            raise DeepcrlError(f"{flag(name)} must be at least {low}, got {value}.")


def within(config: Any, low: float, high: float, *names: str) -> None:
    """Each named field that is set must lie in [low, high]."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not low <= value <= high:
            raise DeepcrlError(f"{flag(name)} must lie in [{low:g}, {high:g}], got {value}.")


def paths(config: Any, *names: str) -> None:
    """Each named field that is set becomes a `pathlib.Path` (tyro and library callers may pass strings)."""
    from pathlib import Path

    for name in names:
        if getattr(config, name) is not None:
            object.__setattr__(config, name, Path(getattr(config, name)))
