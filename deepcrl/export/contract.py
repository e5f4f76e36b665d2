"""Moved to `deepcrl.contract` (shared by export, serve and the robot client); this name is kept for one
release."""

from deepcrl.contract import *  # noqa: F401,F403
