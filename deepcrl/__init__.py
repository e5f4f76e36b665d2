"""deepcrl: deep contrastive RL teachers, distilled into shallow students, exported to ONNX and served."""

from deepcrl.errors import DeepcrlError

__version__ = "0.1.0"

__all__ = ["DeepcrlError", "__version__"]
