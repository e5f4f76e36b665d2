"""The ONNX contract of an exported critic and `OnnxCritic`, its ONNX Runtime reader (no JAX).

Written by `deepcrl.export.critic` (`deepcrl export --part critic`); read by the planner and the server's
/v1/distance, which therefore import nothing from `deepcrl.export`. The file: inputs ``observation``
[batch_s, obs], ``action`` [batch_s, act], ``goal`` [batch_g, goal]; outputs ``phi`` [batch_s, repr] and
``psi`` [batch_g, repr]; metadata as a policy file's plus ``part=critic``, ``distance`` (what the number
means), ``distance_action`` and ``repr_size``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepcrl.errors import ArtifactError, DeepcrlError

OBSERVATION, ACTION, GOAL = "observation", "action", "goal"
PHI, PSI = "phi", "psi"
CRITIC_INPUTS = (OBSERVATION, ACTION, GOAL)
CRITIC_OUTPUTS = (PHI, PSI)
PART = "part"
"""Metadata key: ``critic`` in a critic file (a policy file has none)."""
DISTANCE = "distance"
"""Metadata key: what the number means."""
DISTANCE_MEANING = ("distance(s, a, g) = ||phi(s, a) - psi(g)||_2 = -energy of the contrastive critic; smaller "
                    "means g is reached sooner from s after action a (a rank, not metres or steps)")
ACTION_RULE = "distance_action"
"""Metadata key: the action the planner and /v1/distance put into phi when none is given."""


def _session(model: bytes, intra_op_threads: int):
    """A CPU session with the policy runtime's settings (one sequential thread pool, no spinning, all graph
    optimisations): an encoder call is a few small matmuls, latency-bound like a policy call."""
    import onnxruntime as ort

    from deepcrl.onnx_policy import session_options

    return ort.InferenceSession(model, session_options(intra_op_threads), providers=["CPUExecutionProvider"])


def _part(model, inputs: list[str], output: str) -> bytes:
    """The sub-graph of `model` computing `output` from `inputs` (onnx.utils.Extractor), serialised.

    The Extractor does not follow names that `Loop` bodies read from the outer scope (the hoisted block
    weights), so every initializer of the file is kept; ONNX Runtime drops the unused ones at load.
    """
    from onnx.utils import Extractor

    part = Extractor(model).extract_model(inputs, [output])
    have = {i.name for i in part.graph.initializer}
    part.graph.initializer.extend(i for i in model.graph.initializer if i.name not in have)
    return part.SerializeToString()


class OnnxCritic:
    """An exported critic file run by ONNX Runtime: `phi`, `psi` and `distance` on numpy arrays.

    Raises:
        ArtifactError: missing / unloadable file, or an ONNX model without the critic's phi and psi outputs
            (e.g. a policy file: it has no distance head).
    """

    def __init__(self, path: str | Path, intra_op_threads: int = 1):
        import onnx

        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"no ONNX model at {self.path}: the file does not exist.")
        try:
            model = onnx.load(str(self.path))
        except Exception as exc:  # noqa: BLE001 - protobuf's decode errors
            raise ArtifactError(f"{self.path} is not a loadable ONNX model ({type(exc).__name__}).") from exc
        inputs = sorted(i.name for i in model.graph.input)
        outputs = [o.name for o in model.graph.output]
        if inputs != sorted(CRITIC_INPUTS) or not set(CRITIC_OUTPUTS) <= set(outputs):
            raise ArtifactError(f"{self.path} has no distance head (a critic file has inputs "
                                f"{', '.join(CRITIC_INPUTS)} and outputs phi, psi; this one has inputs {inputs} and "
                                f"outputs {outputs}); export one with `deepcrl export --part critic`.")
        self.metadata = {p.key: p.value for p in model.metadata_props}
        try:
            self.obs_size, self.goal_size, self.action_size = (int(self.metadata[k]) for k in
                                                               ("obs_size", "goal_size", "action_size"))
        except (KeyError, ValueError) as exc:
            raise ArtifactError(f"{self.path} is not a deepcrl critic (its metadata lacks the sizes).") from exc
        self.env_id = self.metadata.get("env_id", "")
        try:  # one session per encoder: the other one's tower is not run at all (a third faster per phi row)
            self._phi = _session(_part(model, [OBSERVATION, ACTION], PHI), intra_op_threads)
            self._psi = _session(_part(model, [GOAL], PSI), intra_op_threads)
            self._phi_out, self._zeros = [PHI], {}
        except Exception as exc:  # noqa: BLE001 - ORT's own exception types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ArtifactError(f"{self.path} is not a loadable ONNX critic ({first}).") from exc

    def _rows(self, x, size: int, what: str) -> np.ndarray:
        if not (type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous):
            x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != size:
            raise DeepcrlError(f"{what} has shape {x.shape}; this critic needs [batch, {size}].")
        return x

    def phi(self, observation, action=None) -> np.ndarray:
        """phi(s, a) [B, repr]; the action defaults to zeros (the planner's convention)."""
        o = self._rows(observation, self.obs_size, "observation")
        if action is None:
            a = self._zeros.get(len(o))
            if a is None:  # one read-only zero block per batch size seen (a planner asks with one or a few)
                a = np.zeros((len(o), self.action_size), np.float32)
                a.flags.writeable = False
                if len(self._zeros) < 16:
                    self._zeros[len(o)] = a
        else:
            a = self._rows(action, self.action_size, "action")
        if len(a) != len(o):
            raise DeepcrlError(f"observation and action batch sizes differ ({len(o)} vs {len(a)}).")
        return self._phi.run(self._phi_out, {OBSERVATION: o, ACTION: a})[0]

    def psi(self, goal) -> np.ndarray:
        """psi(g) [B, repr] (encode goals once, reuse them)."""
        g = self._rows(goal, self.goal_size, "goal")
        return self._psi.run(None, {GOAL: g})[0]
