"""`OnnxPolicy`: an exported policy file run by ONNX Runtime, behind the one policy signature.

Session settings, chosen for a policy that is small and latency-bound (a few dense layers, batch 1 to a few
hundred rows):

- one intra-op thread by default: at these sizes a matmul is microseconds, and handing rows to a thread
  pool costs more than it saves (benchmarks/export.py measures it); a server scales with processes or
  sessions instead, and a robot's control loop keeps its other cores.
- one inter-op thread and sequential execution: the graph is a chain, there is nothing to run in parallel.
- `ORT_ENABLE_ALL` graph optimisation: folds LayerNorm / Gemm+activation patterns once, at load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepcrl.errors import ArtifactError, DeepcrlError

READ_FORMAT_VERSION = 1
REQUIRED_METADATA = ("deepcrl_version", "format_version", "kind", "env_id", "obs_size", "goal_size", "action_size")


def session_options(intra_op_threads: int = 1):
    """ONNX Runtime session options for a small, latency-bound policy (see the module docstring)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(intra_op_threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def default_providers() -> list[str]:
    """CUDA then CPU where onnxruntime-gpu is installed, else CPU. TensorRT is opt-in (it builds engines on
    first run, minutes for a deep model)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or available


class OnnxPolicy:
    """An exported deepcrl `.onnx` policy.

    Args:
        path: the `.onnx` file written by `deepcrl export`.
        providers: ONNX Runtime execution providers; CUDA (if installed) then CPU when None.
        intra_op_threads: threads per matmul; 1 is fastest for policy-sized models.

    Raises:
        ArtifactError: the file is missing, not an ONNX model, not a deepcrl policy, or of a newer format.
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None, intra_op_threads: int = 1):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"no ONNX model at {self.path}: the file does not exist.")
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(intra_op_threads),
                                                providers=providers or default_providers())
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ArtifactError(f"{self.path} is not a loadable ONNX model ({first}).") from None
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        missing = [k for k in REQUIRED_METADATA if k not in meta]
        if missing:
            raise ArtifactError(f"{self.path} is an ONNX model but not a deepcrl policy (its metadata lacks "
                                f"{', '.join(missing)}); export it with `deepcrl export`.")
        try:
            version = int(meta["format_version"])
            self.obs_size, self.goal_size = int(meta["obs_size"]), int(meta["goal_size"])
            self.action_size = int(meta["action_size"])
        except ValueError:
            raise ArtifactError(f"{self.path} is corrupt: its deepcrl metadata holds non-integer sizes.") from None
        if version > READ_FORMAT_VERSION:
            raise ArtifactError(f"{self.path} was exported in format {version}, newer than this deepcrl reads "
                                f"({READ_FORMAT_VERSION}); upgrade deepcrl.")
        names = [i.name for i in self.session.get_inputs()]
        if names != ["observation", "goal"] or [o.name for o in self.session.get_outputs()] != ["action"]:
            raise ArtifactError(f"{self.path} does not have the deepcrl policy signature (inputs observation, goal; "
                                f"output action); it has inputs {names}.")
        self.metadata: dict[str, str] = meta
        self.kind, self.env_id = meta["kind"], meta["env_id"]
        self.action_low = float(meta.get("action_low", -1.0))
        self.action_high = float(meta.get("action_high", 1.0))

    def __call__(self, observation: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Actions [B, act] for observations [B, obs] and goals [B, goal] (float32)."""
        observation = np.ascontiguousarray(observation, dtype=np.float32)
        goal = np.ascontiguousarray(goal, dtype=np.float32)
        if observation.ndim != 2 or observation.shape[1] != self.obs_size:
            raise DeepcrlError(f"observation has shape {observation.shape}; this policy needs [batch, {self.obs_size}].")
        if goal.ndim != 2 or goal.shape[1] != self.goal_size:
            raise DeepcrlError(f"goal has shape {goal.shape}; this policy needs [batch, {self.goal_size}].")
        if observation.shape[0] != goal.shape[0]:
            raise DeepcrlError(f"observation and goal batch sizes differ ({observation.shape[0]} vs {goal.shape[0]}).")
        return self.session.run(["action"], {"observation": observation, "goal": goal})[0]

    def __repr__(self) -> str:
        return (f"OnnxPolicy({str(self.path)!r}, kind={self.kind}, env={self.env_id}, "
                f"precision={self.metadata.get('precision', 'fp32')})")
