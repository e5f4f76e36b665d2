"""A synthetic deepcrl-format ONNX policy (a tanh MLP with random weights), built with `onnx.helper`.

It has the export contract's inputs, output and metadata_props, so the server, client and benchmark can be
exercised without training anything; `reference()` computes the same function in numpy to check answers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepcrl import contract


def _weights(obs_size: int, goal_size: int, action_size: int, hidden: tuple[int, ...], seed: int):
    rng = np.random.default_rng(seed)
    sizes = (obs_size + goal_size, *hidden, action_size)
    return [((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), (0.1 * rng.standard_normal(b)).astype(np.float32))
            for a, b in zip(sizes[:-1], sizes[1:])]


def reference(observation: np.ndarray, goal: np.ndarray, *, hidden: tuple[int, ...] = (64, 64), seed: int = 0,
              action_size: int = 2, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """The synthetic policy's output computed in numpy (same weights as `write_policy` with the same args)."""
    x = np.concatenate([observation, goal], axis=-1).astype(np.float32)
    layers = _weights(observation.shape[-1], goal.shape[-1], action_size, hidden, seed)
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        x = np.tanh(x)
    return low + (x + 1.0) * (0.5 * (high - low))


def write_policy(path: str | Path, *, obs_size: int = 2, goal_size: int = 2, action_size: int = 2,
                 hidden: tuple[int, ...] = (64, 64), seed: int = 0, env_id: str = "point_maze",
                 low: float = -1.0, high: float = 1.0) -> Path:
    """Write a synthetic policy .onnx with deepcrl's input/output names and metadata; returns its path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Concat", list(contract.INPUT_NAMES), ["x0"], axis=-1)]
    inits = []
    layers = _weights(obs_size, goal_size, action_size, hidden, seed)
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("Gemm", [f"x{i}", f"w{i}", f"b{i}"], [f"h{i}"]),
                  helper.make_node("Tanh", [f"h{i}"], [f"x{i + 1}"])]
    n = len(layers)
    scale, offset = 0.5 * (high - low), low + 0.5 * (high - low)
    inits += [numpy_helper.from_array(np.float32(scale).reshape(()), "scale"),
              numpy_helper.from_array(np.float32(offset).reshape(()), "offset")]
    nodes += [helper.make_node("Mul", [f"x{n}", "scale"], ["scaled"]),
              helper.make_node("Add", ["scaled", "offset"], [contract.ACTION])]
    graph = helper.make_graph(
        nodes, "deepcrl_synthetic_policy",
        [helper.make_tensor_value_info(contract.OBSERVATION, TensorProto.FLOAT, [contract.BATCH_DIM, obs_size]),
         helper.make_tensor_value_info(contract.GOAL, TensorProto.FLOAT, [contract.BATCH_DIM, goal_size])],
        [helper.make_tensor_value_info(contract.ACTION, TensorProto.FLOAT, [contract.BATCH_DIM, action_size])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = contract.metadata(kind="synthetic", env_id=env_id, obs_size=obs_size, goal_size=goal_size,
                              action_size=action_size, action_low=low, action_high=high,
                              source={contract.SOURCE_HASH: f"synthetic-seed{seed}"},
                              extra={contract.PARITY_MAX_ABS_DIFF: "0", "hidden": ",".join(map(str, hidden))})
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
