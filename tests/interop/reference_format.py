"""Test helpers: checkpoints in the paper's code's exact pickle format, and its forward pass in plain numpy.

The oracle below is written from the reference's published facts (flax linen towers: Dense -> LayerNorm ->
swish, a residual add after every 4 layers, 64-d encoder heads, tanh-squashed log-std), independently of
deepcrl's networks: the import is correct when deepcrl's outputs equal these.
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
from pathlib import Path

import numpy as np

LN_EPS = 1e-6  # flax.linen.LayerNorm's default epsilon


# ---- the reference's pickle format ---------------------------------------------------------------------------


class Global:
    """A reference to ``module.name``, written as a pickle global (so files can name numpy 1.x's modules)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # the pickler checks a reduce function is callable; never called here
        raise AssertionError("only written, never called")


JAX_REBUILD = Global("jax._src.array", "_reconstruct_array")
NP_REBUILD = Global("numpy.core.multiarray", "_reconstruct")  # numpy 1.26's name (the reference's pin)
NDARRAY = Global("numpy", "ndarray")
DTYPE = Global("numpy", "dtype")


class ReferencePickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
    """Writes every numpy array as jax 0.4.23 pickled a jax array on numpy 1.26 (jax's ``_reconstruct_array``
    around numpy's ``_reconstruct``), with pickle protocol 4 as the reference's ``pickle.dumps``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_global_ref(self, obj: Global) -> None:
        self.save(obj.module)
        self.save(obj.name)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)

    dispatch[Global] = save_global_ref

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            state = (1, obj.shape, obj.dtype, False, np.ascontiguousarray(obj).tobytes())
            aval = {"weak_type": False, "named_shape": {}}
            return JAX_REBUILD, (NP_REBUILD, (NDARRAY, (0,), b"b"), state, aval)
        if isinstance(obj, np.dtype):
            return DTYPE, (obj.str[1:], False, True), (3, obj.str[0], None, None, None, -1, -1, 0)
        return NotImplemented


def dumps_reference(obj) -> bytes:
    import io

    buf = io.BytesIO()
    ReferencePickler(buf, protocol=4).dump(obj)
    return buf.getvalue()


@dataclasses.dataclass
class Args:
    """The fields of the reference's Args that the importer reads (plus two it fills at runtime)."""

    env_id: str = "reacher"
    seed: int = 1
    episode_length: int = 1000
    obs_dim: int = 10
    goal_start_idx: int = 4
    goal_end_idx: int = 7
    total_env_steps: int = 1_000_000
    actor_depth: int = 8
    critic_depth: int = 4
    actor_network_width: int = 32
    critic_network_width: int = 24
    use_relu: int = 0
    num_prefill_actor_steps: float = 0.0  # np.ceil(...) at runtime: a numpy float64 in the pickle


def dumps_args(args: Args) -> bytes:
    """args.pkl as the reference writes it: its Args dataclass pickled from the training script's __main__."""
    main = sys.modules["__main__"]
    had = getattr(main, "Args", None)
    cls_module, cls_qualname = Args.__module__, Args.__qualname__
    Args.__module__, Args.__qualname__ = "__main__", "Args"
    main.Args = Args
    try:
        return pickle.dumps(dataclasses.replace(args, num_prefill_actor_steps=np.float64(np.ceil(1000 / 62))))
    finally:
        Args.__module__, Args.__qualname__ = cls_module, cls_qualname
        if had is None:
            del main.Args
        else:
            main.Args = had


# ---- random parameters in the reference's layout -------------------------------------------------------------


def _layer(rng, fan_in: int, fan_out: int) -> dict:
    return {"kernel": rng.uniform(-1, 1, (fan_in, fan_out)).astype(np.float32) * np.sqrt(3.0 / fan_in),
            "bias": rng.normal(0, 0.1, fan_out).astype(np.float32)}


def _norm(rng, width: int) -> dict:
    return {"scale": rng.uniform(0.5, 1.5, width).astype(np.float32),
            "bias": rng.normal(0, 0.1, width).astype(np.float32)}


def tower_params(rng, in_size: int, width: int, depth: int, heads: list[int]) -> dict:
    """A flax linen module's ``params``: Dense_i / LayerNorm_i numbered in call order, heads last."""
    p = {"Dense_0": _layer(rng, in_size, width), "LayerNorm_0": _norm(rng, width)}
    for i in range(1, depth + 1):
        p[f"Dense_{i}"], p[f"LayerNorm_{i}"] = _layer(rng, width, width), _norm(rng, width)
    for k, out in enumerate(heads):
        p[f"Dense_{depth + 1 + k}"] = _layer(rng, width, out)
    return p


def reference_checkpoint(args: Args, obs: int, goal: int, act: int, seed: int = 0):
    """``(alpha_params, actor_params, critic_params)`` with random values, as the reference's final.pkl."""
    rng = np.random.default_rng(seed)
    actor = {"params": tower_params(rng, obs + goal, args.actor_network_width, args.actor_depth, [act, act])}
    critic = {"sa_encoder": {"params": tower_params(rng, obs + act, args.critic_network_width, args.critic_depth,
                                                    [64])},
              "g_encoder": {"params": tower_params(rng, goal, args.critic_network_width, args.critic_depth, [64])}}
    alpha = {"log_alpha": np.asarray(-1.25, np.float32)}
    return alpha, actor, critic


def write_run(run: Path, args: Args, checkpoint, name: str = "final.pkl") -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / name).write_bytes(dumps_reference(checkpoint))
    (run / "args.pkl").write_bytes(dumps_args(args))
    return run


# ---- the reference's forward pass, in numpy (float64) --------------------------------------------------------


def _dense(x, p):
    return x @ p["kernel"].astype(np.float64) + p["bias"]


def _ln(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + LN_EPS) * p["scale"] + p["bias"]


def _swish(x):
    return x / (1.0 + np.exp(-x))


def tower(p: dict, x: np.ndarray, depth: int) -> np.ndarray:
    x = _swish(_ln(_dense(x, p["Dense_0"]), p["LayerNorm_0"]))
    for b in range(depth // 4):
        identity = x
        for j in range(4):
            i = 1 + 4 * b + j
            x = _swish(_ln(_dense(x, p[f"Dense_{i}"]), p[f"LayerNorm_{i}"]))
        x = x + identity
    return x


def actor_forward(actor_vars, depth, state, goal):
    """(deterministic action tanh(mean), log_std in [-5, 2]) of the reference actor on [state, goal]."""
    p = actor_vars["params"]
    h = tower(p, np.concatenate([state, goal], -1).astype(np.float64), depth)
    mean, log_std = _dense(h, p[f"Dense_{depth + 1}"]), np.tanh(_dense(h, p[f"Dense_{depth + 2}"]))
    return np.tanh(mean), -5.0 + 0.5 * 7.0 * (log_std + 1.0)


def energy_forward(critic, depth, state, action, goal):
    """The reference critic's -||sa_encoder(s, a) - g_encoder(g)||_2."""
    sa, g = critic["sa_encoder"]["params"], critic["g_encoder"]["params"]
    phi = _dense(tower(sa, np.concatenate([state, action], -1).astype(np.float64), depth), sa[f"Dense_{depth + 1}"])
    psi = _dense(tower(g, goal.astype(np.float64), depth), g[f"Dense_{depth + 1}"])
    return -np.sqrt(((phi - psi) ** 2).sum(-1))
