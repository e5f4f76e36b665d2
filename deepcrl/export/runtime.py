"""Moved to `deepcrl.onnx_policy` (the server runs it without importing the exporter); this name is kept for
one release."""

from deepcrl.onnx_policy import OnnxPolicy, default_providers, session, session_options  # noqa: F401
