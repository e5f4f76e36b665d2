"""`deepcrl envs`: list the registered environments."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class EnvsConfig:
    """List the registered goal-conditioned environments with their sizes."""

    json: bool = False
    """Print JSON (one object per env) instead of a table."""

