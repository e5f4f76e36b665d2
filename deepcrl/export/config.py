"""`deepcrl export`: turn a teacher or student artifact into a verified ONNX policy."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from deepcrl import _checks as checks
from deepcrl.errors import DeepcrlError


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Export a teacher or student artifact to ONNX (or a Triton repository / TF SavedModel), checked
    against JAX before anything is written."""

    run: Path
    """Run directory of the teacher or student to export."""
    out: Path
    """Output: a `.onnx` file (format onnx), a model repository directory (triton) or a directory (savedmodel)."""
    format: Literal["onnx", "triton", "savedmodel"] = "onnx"
    """onnx: one file; triton: `<out>/<model-name>/1/model.onnx` + `config.pbtxt`; savedmodel: TF SavedModel
    (extra `tf`)."""
    quantize: Literal["none", "int8"] = "none"
    """int8: ONNX Runtime int8 quantisation of the weights, refused when its action error passes --max-int8-error."""
    int8_mode: Literal["dynamic", "static"] = "dynamic"
    """dynamic: activations quantised at run time; static: activation ranges calibrated on rollout states."""
    max_int8_error: float = 0.1
    """Largest max |action(int8) - action(JAX)| accepted on rollout states, in action units."""
    fp16: bool = False
    """Store weights and compute in float16 (inputs and output stay float32); meant for GPU targets."""
    max_fp16_error: float = 1e-2
    """Largest max |action(fp16) - action(JAX)| accepted on rollout states, in action units."""
    max_diff: float = 1e-5
    """Largest max |action(ONNX) - action(JAX)| accepted for the float32 model."""
    model_name: str = "deepcrl_policy"
    """Model name inside a Triton repository (what clients address, as `deepcrl serve` serves a file's stem)."""
    max_batch_size: int = 256
    """Triton: largest batch the server may form (dynamic batching)."""
    max_queue_delay_us: int = 100
    """Triton: how long the dynamic batcher waits to fill a batch, in microseconds."""
    opset: int = 21
    """ONNX opset (21 keeps the file loadable by Triton's and older ONNX Runtime releases)."""
    seed: int = 0
    """Seed of the random and rollout inputs used for the parity check."""
    json: bool = False
    """Print the export report as one JSON object on stdout."""
    part: Literal["policy", "critic"] = "policy"
    """policy: the actor (observation, goal -> action); critic: a teacher's distance head, the encoders phi(s, a)
    and psi(g) as two outputs (distance = ||phi - psi||), float32 .onnx only."""

    def __post_init__(self) -> None:
        """Check the fields (one `DeepcrlError` sentence for the first bad one); paths become `Path`s."""
        checks.paths(self, "run", "out")
        checks.positive(self, "max_diff", "max_int8_error", "max_fp16_error")
        checks.at_least(self, 1, "max_batch_size")
        checks.at_least(self, 0, "max_queue_delay_us")
        if self.quantize == "int8" and self.fp16:
            raise DeepcrlError("--quantize int8 and --fp16 exclude each other; choose one.")
        if not self.model_name or "/" in self.model_name or self.model_name.startswith("."):
            raise DeepcrlError(f"--model-name {self.model_name!r} must be a plain directory name.")

