"""Deep residual networks of the contrastive RL teacher: a tanh-Gaussian actor and a (phi, psi) critic.

Both are built on `ResidualTower`: input Dense -> LayerNorm -> Swish, then ``depth / 4`` residual blocks of
4 x (Dense -> LayerNorm -> Swish) with the block input added back. "Depth" counts the Dense layers inside the
blocks, so it is a multiple of 4 (4 to 1024).

The blocks' parameters are stacked along a leading block axis (built once with `nnx.vmap`) and the forward
pass runs `jax.lax.scan` over the split block state, rebuilding one block with `nnx.merge` inside the body.
Two reasons for this exact form: XLA compiles one block instead of ``depth / 4``, so compile time does not
grow with depth, and jax2onnx exports it as a single ONNX ``Loop`` (a forward pass through `nnx.scan` cannot be
exported). The same module therefore trains and exports.

Options (config keys, all optional): ``remat`` wraps each block in `jax.checkpoint` (activations of one block
are recomputed in the backward pass, so memory no longer grows with depth); ``dtype="bfloat16"`` computes the
tower in bfloat16 while the parameters, the heads and all outputs stay float32 (for GPUs; on CPU bfloat16 is
usually slower); ``scan=False`` unrolls the blocks in a Python loop with the same parameters (only for the
depth benchmark and as a reference: compile time then grows with depth); ``residual_init`` sets the initial
scale of each block's last LayerNorm (`RESIDUAL_INITS`; the parameters and the exported graph are the same).
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from deepcrl.errors import DeepcrlError

MIN_DEPTH, MAX_DEPTH = 4, 1024
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# LeCun-uniform: U(-sqrt(3 / fan_in), sqrt(3 / fan_in)), the reference's initialisation for every Dense.
kernel_init = nnx.initializers.lecun_uniform()
bias_init = nnx.initializers.zeros_init()

_ACTOR_KEYS = ("obs_size", "goal_size", "action_size", "depth", "width")
_CRITIC_KEYS = _ACTOR_KEYS + ("repr_size",)
_OPTIONAL = {"remat": False, "dtype": "float32", "scan": True, "residual_init": "reference"}
# Initial scale of the last LayerNorm in every residual block, given the number of blocks n. "reference": 1 (the
# stream grows with depth); "zero": 0 (a deep tower starts as its input layer, but each block's interior gets no
# gradient until Adam has moved the scale); "scaled": 1/n (the deep recipe: all branches together start as one
# block's worth, so depth 4 is exactly the reference and the stream stays bounded at any depth).
RESIDUAL_INITS = {"reference": lambda n: 1.0, "zero": lambda n: 0.0, "scaled": lambda n: 1.0 / n}


def _dense(in_size: int, out_size: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(in_size, out_size, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype,
                      param_dtype=jnp.float32, rngs=rngs)


class DenseNormSwish(nnx.Module):
    """Dense -> LayerNorm -> Swish."""

    def __init__(self, in_size: int, out_size: int, *, dtype=jnp.float32, scale: float = 1.0, rngs: nnx.Rngs):
        self.dense = _dense(in_size, out_size, dtype, rngs)
        self.norm = nnx.LayerNorm(out_size, dtype=dtype, param_dtype=jnp.float32,
                                  scale_init=nnx.initializers.constant(scale), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.swish(self.norm(self.dense(x)))


class ResidualBlock(nnx.Module):
    """4 x (Dense -> LayerNorm -> Swish) plus the block input.

    ``last_scale`` is the initial scale of the last LayerNorm (see `RESIDUAL_INITS`).
    """

    def __init__(self, width: int, *, dtype=jnp.float32, last_scale: float = 1.0, rngs: nnx.Rngs):
        self.layers = nnx.List([DenseNormSwish(width, width, dtype=dtype, rngs=rngs,
                                               scale=last_scale if i == 3 else 1.0) for i in range(4)])

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for layer in self.layers:
            h = layer(h)
        return x + h


class ResidualTower(nnx.Module):
    """Input Dense -> LayerNorm -> Swish, then ``depth // 4`` stacked residual blocks (output width ``width``).

    ``self.blocks`` is one `ResidualBlock` whose every parameter has a leading axis of size ``depth // 4``.
    """

    def __init__(self, in_size: int, width: int, depth: int, *, remat: bool = False, dtype=jnp.float32,
                 scan: bool = True, residual_init: str = "reference", rngs: nnx.Rngs):
        self.in_size, self.width, self.depth = in_size, width, depth
        self.remat, self.scan, self.dtype = remat, scan, dtype
        self.num_blocks = depth // 4
        self.input = DenseNormSwish(in_size, width, dtype=dtype, rngs=rngs)

        last_scale = RESIDUAL_INITS[residual_init](self.num_blocks)

        # One independent key per block, then one vectorised init: the stacked layout scan expects.
        @nnx.split_rngs(splits=self.num_blocks)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_blocks(rngs: nnx.Rngs) -> ResidualBlock:
            return ResidualBlock(width, dtype=dtype, last_scale=last_scale, rngs=rngs)

        self.blocks = make_blocks(rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.input(x)
        graphdef, stacked = nnx.split(self.blocks)

        def block(h: jax.Array, state) -> jax.Array:
            return nnx.merge(graphdef, state)(h)

        if self.remat:
            # prevent_cse=False is safe (and faster) inside scan, which already keeps the recomputation apart.
            block = jax.checkpoint(block, prevent_cse=False)
        if self.scan:
            h, _ = jax.lax.scan(lambda carry, state: (block(carry, state), None), h, stacked)
        else:
            for i in range(self.num_blocks):
                h = block(h, jax.tree.map(lambda p, i=i: p[i], stacked))
        return h


def _head(width: int, out_size: int, rngs: nnx.Rngs) -> nnx.Linear:
    # Heads compute in float32 even in bfloat16 mode: log-stds and energies need the precision.
    return _dense(width, out_size, jnp.float32, rngs)


def _check_features(x: jax.Array, size: int, what: str) -> None:
    # Only the feature axis is checked: leading axes are free, so the networks also run under jax.vmap.
    if x.ndim < 1 or x.shape[-1] != size:
        raise DeepcrlError(f"The {what} must have shape [batch, {size}], got {tuple(x.shape)}.")


class Actor(nnx.Module):
    """Tanh-Gaussian policy on [observation, goal].

    ``__call__`` returns the pre-tanh Gaussian's mean and log-std. The log-std is squashed smoothly into
    [LOG_STD_MIN, LOG_STD_MAX] = [-5, 2] (a rescaled tanh, as in the reference): unlike a hard clip it keeps a
    gradient at the bounds, so alpha can still raise a collapsed entropy.
    """

    def __init__(self, obs_size: int, goal_size: int, action_size: int, depth: int, width: int, *,
                 remat: bool = False, dtype: str = "float32", scan: bool = True,
                 residual_init: str = "reference", rngs: nnx.Rngs):
        self.obs_size, self.goal_size, self.action_size = obs_size, goal_size, action_size
        self.tower = ResidualTower(obs_size + goal_size, width, depth, remat=remat, dtype=DTYPES[dtype],
                                   scan=scan, residual_init=residual_init, rngs=rngs)
        self.mean = _head(width, action_size, rngs)
        self.log_std = _head(width, action_size, rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Args: x [B, obs + goal]. Returns: (mean [B, act], log_std [B, act]), float32."""
        _check_features(x, self.obs_size + self.goal_size, "actor input [observation, goal]")
        h = self.tower(x).astype(jnp.float32)
        squashed = jnp.tanh(self.log_std(h))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (squashed + 1.0)
        return self.mean(h), log_std

    def act(self, observation: jax.Array, goal: jax.Array) -> jax.Array:
        """The deterministic action tanh(mean) in [-1, 1]. Args: observation [B, obs], goal [B, goal]."""
        _check_features(observation, self.obs_size, "observation")
        _check_features(goal, self.goal_size, "goal")
        mean, _ = self(jnp.concatenate([observation, goal], axis=-1))
        return jnp.tanh(mean)


def l2_energy(phi: jax.Array, psi: jax.Array) -> jax.Array:
    """-||phi - psi||_2 over the last axis, with a zero (not NaN) gradient where the distance is 0."""
    sq = jnp.sum(jnp.square(phi - psi), axis=-1)
    positive = sq > 0
    return -jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def pairwise_energy(phi: jax.Array, psi: jax.Array) -> jax.Array:
    """Logits [B, B] with entry (i, j) = -||phi_i - psi_j||_2. Args: phi [B, R], psi [B, R]."""
    return l2_energy(phi[:, None, :], psi[None, :, :])


class Critic(nnx.Module):
    """Contrastive critic f(s, a, g) = -||phi(s, a) - psi(g)||_2 with two residual encoders."""

    def __init__(self, obs_size: int, goal_size: int, action_size: int, depth: int, width: int,
                 repr_size: int = 64, *, remat: bool = False, dtype: str = "float32", scan: bool = True,
                 residual_init: str = "reference", rngs: nnx.Rngs):
        self.obs_size, self.goal_size, self.action_size = obs_size, goal_size, action_size
        self.repr_size = repr_size
        kw = dict(remat=remat, dtype=DTYPES[dtype], scan=scan, residual_init=residual_init, rngs=rngs)
        self.sa_tower = ResidualTower(obs_size + action_size, width, depth, **kw)
        self.sa_head = _head(width, repr_size, rngs)
        self.g_tower = ResidualTower(goal_size, width, depth, **kw)
        self.g_head = _head(width, repr_size, rngs)

    def phi(self, s: jax.Array, a: jax.Array) -> jax.Array:
        """State-action representation. Args: s [B, obs], a [B, act]. Returns: [B, repr] float32."""
        _check_features(s, self.obs_size, "critic state")
        _check_features(a, self.action_size, "critic action")
        h = self.sa_tower(jnp.concatenate([s, a], axis=-1))
        return self.sa_head(h.astype(jnp.float32))

    def psi(self, g: jax.Array) -> jax.Array:
        """Goal representation. Args: g [B, goal]. Returns: [B, repr] float32."""
        _check_features(g, self.goal_size, "critic goal")
        return self.g_head(self.g_tower(g).astype(jnp.float32))

    def energy(self, s: jax.Array, a: jax.Array, g: jax.Array) -> jax.Array:
        """Row-wise f(s_i, a_i, g_i) = -||phi_i - psi_i||_2. Returns: [B]."""
        return l2_energy(self.phi(s, a), self.psi(g))

    @staticmethod
    def pairwise(phi: jax.Array, psi: jax.Array) -> jax.Array:
        """All-pairs logits [B, B], entry (i, j) = -||phi_i - psi_j||_2 (positives on the diagonal)."""
        return pairwise_energy(phi, psi)


def _positive_int(cfg: dict, key: str, what: str) -> int:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise DeepcrlError(f"The {what} config's {key!r} must be a positive integer, got {value!r}.")
    return int(value)


def validate_config(cfg: dict[str, Any], what: str = "actor") -> dict[str, Any]:
    """Check a network config and fill in its defaults; any problem is one `DeepcrlError` sentence.

    Args:
        cfg: the builder's config (see `actor_from_config` / `critic_from_config`).
        what: "actor" or "critic" (selects the keys and names the network in errors).
    Returns:
        A new dict with every key set (optional ones at their defaults).
    """
    if not isinstance(cfg, dict):
        raise DeepcrlError(f"The {what} config must be a dict, got {type(cfg).__name__}.")
    required = _CRITIC_KEYS if what == "critic" else _ACTOR_KEYS
    defaults = {**_OPTIONAL, **({"repr_size": 64} if what == "critic" else {})}
    missing = [k for k in required if k not in cfg and k not in defaults]
    if missing:
        raise DeepcrlError(f"The {what} config is missing {', '.join(missing)}.")
    unknown = sorted(set(cfg) - set(required) - set(defaults))
    if unknown:
        raise DeepcrlError(f"The {what} config has unknown keys {', '.join(unknown)} "
                           f"(known: {', '.join(list(required) + list(_OPTIONAL))}).")
    out = {**defaults, **cfg}
    for key in required:
        out[key] = _positive_int(out, key, what)
    depth = out["depth"]
    if depth % 4 or not MIN_DEPTH <= depth <= MAX_DEPTH:
        raise DeepcrlError(f"The {what} depth must be a multiple of 4 from {MIN_DEPTH} to {MAX_DEPTH}, "
                           f"got {depth}.")
    if out["dtype"] not in DTYPES:
        raise DeepcrlError(f"The {what} dtype must be one of {', '.join(DTYPES)}, got {out['dtype']!r}.")
    if out["residual_init"] not in RESIDUAL_INITS:
        raise DeepcrlError(f"The {what} config's 'residual_init' must be one of {', '.join(RESIDUAL_INITS)}, "
                           f"got {out['residual_init']!r}.")
    for key in ("remat", "scan"):
        if not isinstance(out[key], bool):
            raise DeepcrlError(f"The {what} config's {key!r} must be true or false, got {out[key]!r}.")
    return out


def actor_from_config(cfg: dict[str, Any], seed: int = 0) -> Actor:
    """Build a freshly initialised `Actor`.

    Args:
        cfg: ``obs_size, goal_size, action_size, depth, width`` (+ optional ``remat=False``,
            ``dtype="float32"|"bfloat16"``, ``scan=True``, ``residual_init="reference"|"zero"|"scaled"``).
        seed: initialisation seed.
    Returns:
        The actor; bad configs raise `DeepcrlError` before any array is made.
    """
    c = validate_config(cfg, "actor")
    return Actor(c["obs_size"], c["goal_size"], c["action_size"], c["depth"], c["width"], remat=c["remat"],
                 dtype=c["dtype"], scan=c["scan"], residual_init=c["residual_init"],
                 rngs=nnx.Rngs(params=seed))


def critic_from_config(cfg: dict[str, Any], seed: int = 0) -> Critic:
    """Build a freshly initialised `Critic`.

    Args:
        cfg: ``obs_size, goal_size, action_size, depth, width`` and ``repr_size=64`` (+ optional ``remat``,
            ``dtype``, ``scan``, ``residual_init`` as for the actor).
        seed: initialisation seed.
    Returns:
        The critic; bad configs raise `DeepcrlError` before any array is made.
    """
    c = validate_config(cfg, "critic")
    return Critic(c["obs_size"], c["goal_size"], c["action_size"], c["depth"], c["width"], c["repr_size"],
                  remat=c["remat"], dtype=c["dtype"], scan=c["scan"], residual_init=c["residual_init"],
                  rngs=nnx.Rngs(params=seed))
