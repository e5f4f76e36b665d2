"""`OnnxPolicy`: an exported policy file run by ONNX Runtime, behind the one policy signature.

The one ONNX Runtime policy of deepcrl: export's parity check, `deepcrl eval --model`, the server's
micro-batcher and the benchmarks all run a file through it. Session settings, chosen for a policy that is
small and latency-bound (a few dense layers, batch 1 to a few hundred rows):

- one intra-op thread by default: at these sizes a matmul is microseconds, and handing rows to a thread
  pool costs more than it saves (benchmarks/export.py measures it); a server scales with processes or
  sessions instead, and a robot's control loop keeps its other cores.
- no spinning intra-op threads (with more than one): they would burn the cores the HTTP server and the
  robot's loop need between calls.
- one inter-op thread and sequential execution: the graph is a chain, there is nothing to run in parallel.
- `ORT_ENABLE_ALL` graph optimisation: folds LayerNorm / Gemm+activation patterns once, at load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepcrl.errors import ArtifactError, DeepcrlError
from deepcrl import contract


def session_options(intra_op_threads: int = 1):
    """ONNX Runtime session options for a small, latency-bound policy (see the module docstring)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(intra_op_threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def default_providers() -> list[str]:
    """CUDA then CPU where onnxruntime-gpu is installed, else CPU. TensorRT is opt-in (it builds engines on
    first run, minutes for a deep model)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or available


def session(model: str | Path | bytes, intra_op_threads: int = 1, providers: list[str] | None = None):
    """An ONNX Runtime session on a file or serialised model, with deepcrl's options; ORT's own errors
    propagate (callers that load a user's file go through `OnnxPolicy`, which turns them into a sentence)."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, session_options(intra_op_threads), providers=providers or default_providers())


class OnnxPolicy:
    """An exported deepcrl `.onnx` policy, its contract checked on load.

    Args:
        path: the `.onnx` file written by `deepcrl export`.
        providers: ONNX Runtime execution providers; CUDA (if installed) then CPU when None.
        intra_op_threads: threads per matmul; 1 is fastest for policy-sized models.

    Raises:
        ArtifactError: the file is missing, not an ONNX model, not a deepcrl policy, or of a newer format.
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None, intra_op_threads: int = 1):
        self.path = Path(path)
        self.name = self.path.stem
        if not self.path.is_file():
            raise ArtifactError(f"no ONNX model at {self.path}: the file does not exist.")
        try:
            self.session = session(self.path, intra_op_threads, providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own, unexported exception types; cause kept
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ArtifactError(f"{self.path} is not a loadable ONNX model ({first}).") from exc
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        sig = contract.check(self.path, meta, [i.name for i in self.session.get_inputs()],
                             [o.name for o in self.session.get_outputs()])
        self.metadata: dict[str, str] = meta
        self.signature = sig
        self.kind, self.env_id = sig.kind, sig.env_id
        self.obs_size, self.goal_size, self.action_size = sig.obs_size, sig.goal_size, sig.action_size
        self.action_low, self.action_high = sig.action_low, sig.action_high
        self._outputs = [contract.OUTPUT_NAME]

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
        return self.session.run(self._outputs, {contract.OBSERVATION: observation, contract.GOAL: goal})[0]

    def warmup(self, calls: int = 32, batch_sizes: tuple[int, ...] = (1, 8, 64)) -> None:
        """Run a few calls so the first real request does not pay for allocations and graph setup."""
        for i in range(calls):
            b = batch_sizes[i % len(batch_sizes)]
            self(np.zeros((b, self.obs_size), np.float32), np.zeros((b, self.goal_size), np.float32))

    def __repr__(self) -> str:
        return (f"OnnxPolicy({str(self.path)!r}, kind={self.kind}, env={self.env_id}, "
                f"precision={self.metadata.get(contract.PRECISION, 'fp32')})")
