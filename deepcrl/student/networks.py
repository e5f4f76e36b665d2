"""Shallow student networks: a plain MLP policy on [s, g] and optional shallow CRL encoders.

Everything here is built from `nnx.Linear`, `nnx.LayerNorm`, swish and tanh, so jax2onnx exports the actor
as a flat graph. Layers are named attributes (``layer0``, ``layer1``, ...) rather than an `nnx.List`, because
an nnx pure dict of a list has integer keys and an Orbax round trip turns them into strings, which would
break `deepcrl.policy.restore_module`'s shape check.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from deepcrl.teacher.networks import LOG_STD_MAX, LOG_STD_MIN, l2_energy  # the teacher's range and energy

DEFAULT_HIDDEN = (256, 256)


class MLP(nnx.Module):
    """Dense -> [LayerNorm] -> swish for every hidden size; the last hidden features are the output."""

    def __init__(self, in_size: int, hidden: tuple[int, ...], layer_norm: bool, *, rngs: nnx.Rngs):
        self.num_layers = len(hidden)
        self.layer_norm = layer_norm
        sizes = (in_size, *hidden)
        for i in range(self.num_layers):
            setattr(self, f"layer{i}", nnx.Linear(sizes[i], sizes[i + 1], kernel_init=nnx.initializers.lecun_uniform(),
                                                  rngs=rngs))
            if layer_norm:
                setattr(self, f"norm{i}", nnx.LayerNorm(sizes[i + 1], rngs=rngs))
        self.out_size = sizes[-1]

    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_layers):
            x = getattr(self, f"layer{i}")(x)
            if self.layer_norm:
                x = getattr(self, f"norm{i}")(x)
            x = nnx.swish(x)
        return x


class StudentActor(nnx.Module):
    """MLP policy on [observation, goal] with a tanh-bounded deterministic action (optionally Gaussian).

    With ``input_mean`` / ``input_std`` (one entry per input, measured on the teacher's states when the student
    is distilled) the input is standardised first, ``(x - mean) / std``. They are constants of the network
    (stored in the manifest's network config, not trained), so an exported graph carries them.
    """

    def __init__(self, obs_size: int, goal_size: int, action_size: int, hidden: tuple[int, ...] = DEFAULT_HIDDEN,
                 layer_norm: bool = False, gaussian: bool = False, input_mean: tuple[float, ...] | None = None,
                 input_std: tuple[float, ...] | None = None, *, rngs: nnx.Rngs):
        self.obs_size, self.goal_size, self.action_size = obs_size, goal_size, action_size
        self.gaussian = gaussian
        if (input_mean is None) != (input_std is None):
            raise ValueError("input_mean and input_std go together.")
        if input_mean is not None and not (len(input_mean) == len(input_std) == obs_size + goal_size):
            raise ValueError(f"input_mean/input_std need {obs_size + goal_size} entries each.")
        # plain tuples of floats: static data of the module, traced as constants
        self.input_mean = None if input_mean is None else tuple(float(v) for v in input_mean)
        self.input_std = None if input_std is None else tuple(float(v) for v in input_std)
        self.torso = MLP(obs_size + goal_size, tuple(hidden), layer_norm, rngs=rngs)
        width = self.torso.out_size
        self.mean = nnx.Linear(width, action_size, kernel_init=nnx.initializers.lecun_uniform(), rngs=rngs)
        if gaussian:
            self.log_std = nnx.Linear(width, action_size, kernel_init=nnx.initializers.lecun_uniform(), rngs=rngs)

    def normalise(self, x: jax.Array) -> jax.Array:
        """The standardised input (x itself without stored statistics)."""
        if self.input_mean is None:
            return x
        mean = jnp.asarray(self.input_mean, x.dtype)
        return (x - mean) * jnp.asarray([1.0 / s for s in self.input_std], x.dtype)

    def features(self, x: jax.Array) -> jax.Array:
        """Last hidden layer on x = [observation, goal] (what actor-feature matching projects)."""
        return self.torso(self.normalise(x))

    def heads(self, h: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """Pre-tanh mean and clipped log-std (None for a deterministic student) from hidden features."""
        log_std = jnp.clip(self.log_std(h), LOG_STD_MIN, LOG_STD_MAX) if self.gaussian else None
        return self.mean(h), log_std

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """x[B, obs+goal] -> (pre-tanh mean[B, act], log_std[B, act] or None)."""
        return self.heads(self.features(x))

    def act(self, observation: jax.Array, goal: jax.Array) -> jax.Array:
        """Deterministic action in [-1, 1]."""
        return jnp.tanh(self(jnp.concatenate([observation, goal], axis=-1))[0])


class StudentCritic(nnx.Module):
    """Shallow CRL encoders phi_s(s, a) and psi_s(g) with the teacher's representation size and energy."""

    def __init__(self, obs_size: int, goal_size: int, action_size: int, hidden: tuple[int, ...], repr_size: int,
                 layer_norm: bool = False, *, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_uniform()
        self.sa_torso = MLP(obs_size + action_size, tuple(hidden), layer_norm, rngs=rngs)
        self.sa_head = nnx.Linear(self.sa_torso.out_size, repr_size, kernel_init=init, rngs=rngs)
        self.g_torso = MLP(goal_size, tuple(hidden), layer_norm, rngs=rngs)
        self.g_head = nnx.Linear(self.g_torso.out_size, repr_size, kernel_init=init, rngs=rngs)

    def phi(self, s: jax.Array, a: jax.Array) -> jax.Array:
        return self.sa_head(self.sa_torso(jnp.concatenate([s, a], axis=-1)))

    def psi(self, g: jax.Array) -> jax.Array:
        return self.g_head(self.g_torso(g))

    def energy(self, s: jax.Array, a: jax.Array, g: jax.Array) -> jax.Array:
        """-||phi(s, a) - psi(g)||_2 per row, [B] (the teacher's energy: a finite gradient at distance 0)."""
        return l2_energy(self.phi(s, a), self.psi(g))


def _sizes(cfg: dict[str, Any]) -> tuple[int, int, int]:
    return int(cfg["obs_size"]), int(cfg["goal_size"]), int(cfg["action_size"])


def actor_from_config(cfg: dict[str, Any], seed: int = 0) -> StudentActor:
    """Build a `StudentActor` from a manifest's ``network["actor"]``.

    Args:
        cfg: ``obs_size, goal_size, action_size`` and optional ``hidden`` (list of ints, default [256, 256]),
            ``layer_norm`` (False), ``gaussian`` (False), ``input_mean`` / ``input_std`` (lists, None: no
            input standardisation).
        seed: parameter initialisation seed.
    """
    return StudentActor(*_sizes(cfg), hidden=tuple(int(h) for h in cfg.get("hidden", DEFAULT_HIDDEN)),
                        layer_norm=bool(cfg.get("layer_norm", False)), gaussian=bool(cfg.get("gaussian", False)),
                        input_mean=cfg.get("input_mean"), input_std=cfg.get("input_std"), rngs=nnx.Rngs(seed))


def critic_from_config(cfg: dict[str, Any], seed: int = 0) -> StudentCritic:
    """Build a `StudentCritic` from ``obs_size, goal_size, action_size, hidden, repr_size`` (+ ``layer_norm``)."""
    return StudentCritic(*_sizes(cfg), hidden=tuple(int(h) for h in cfg.get("hidden", DEFAULT_HIDDEN)),
                         repr_size=int(cfg.get("repr_size", 64)), layer_norm=bool(cfg.get("layer_norm", False)),
                         rngs=nnx.Rngs(seed))


def param_count(module: nnx.Module) -> int:
    """Number of trainable parameters of a module."""
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param))))


def matmul_flops(module: nnx.Module) -> int:
    """FLOPs of one forward pass for one sample, counting the dense layers (2 per multiply-add).

    Every ``kernel`` leaf of shape (..., in, out) is one (or, stacked, several) matrix products; counting
    them from the parameters is exact for MLPs and residual towers alike, while XLA's cost analysis counts a
    scanned block only once. Norms, activations and biases add O(width) each and are left out.
    """
    leaves = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(module, nnx.Param)))[0]
    return int(sum(2 * x.size for path, x in leaves if getattr(path[-1], "key", None) == "kernel"))
