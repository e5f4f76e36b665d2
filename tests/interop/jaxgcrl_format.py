"""Test helpers: JaxGCRL run directories in its exact pickle format, and its CRL forward pass in plain numpy.

Written from JaxGCRL's published code (jaxgcrl/agents/crl/{crl,networks,losses}.py, run.py; training.py and
utils.py before 2025-03), independently of deepcrl's networks: the import is right when deepcrl's outputs equal
this oracle. Checkpoints are written as jax 0.4.25 on numpy 1.26 pickled jax arrays (`reference_format`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import sys
import types
from pathlib import Path
from typing import Optional

import numpy as np

import reference_format as ref

LN_EPS = 1e-6  # flax.linen.LayerNorm's default epsilon


# ---- args.pkl: flax struct dataclasses (frozen dataclasses) pickled under JaxGCRL's module names ------------


@dataclasses.dataclass(frozen=True)
class CRL:
    """The fields of jaxgcrl.agents.crl.crl.CRL (defaults as JaxGCRL's)."""

    policy_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    batch_size: int = 256
    discounting: float = 0.99
    logsumexp_penalty_coeff: float = 0.1
    train_step_multiplier: int = 1
    disable_entropy_actor: bool = False
    max_replay_size: int = 10000
    min_replay_size: int = 1000
    unroll_length: int = 62
    h_dim: int = 256
    n_hidden: int = 2
    skip_connections: int = 4
    use_relu: bool = False
    repr_dim: int = 64
    use_ln: bool = False
    contrastive_loss_fn: str = "fwd_infonce"
    energy_fn: str = "norm"


@dataclasses.dataclass(frozen=True)
class SAC:
    """jaxgcrl.agents.sac.sac.SAC (a few fields: only its class matters here)."""

    batch_size: int = 256
    discounting: float = 0.99


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The fields of jaxgcrl.utils.config.RunConfig."""

    env: str = "reacher"
    total_env_steps: int = 50_000_000
    episode_length: int = 1001
    eval_env: Optional[str] = None
    num_envs: int = 256
    num_eval_envs: int = 256
    action_repeat: int = 1
    num_evals: int = 200
    seed: int = 0
    backend: Optional[str] = None
    exp_name: str = "run"
    log_wandb: bool = True
    wandb_project_name: str = "jaxgcrl"
    wandb_group: str = "."
    wandb_mode: str = "online"
    visualization_interval: int = 5
    vis_length: int = 1000
    checkpoint_logdir: Optional[str] = None
    max_devices_per_host: int = 1
    cuda: bool = True


@dataclasses.dataclass
class Args:
    """utils.Args of JaxGCRL's training.py (2025-02): one dataclass, the CRL agent implied."""

    exp_name: str = "training"
    seed: int = 1
    checkpoint: bool = True
    env_name: str = "reacher"
    episode_length: int = 1000
    backend: Optional[str] = None
    total_env_steps: int = 50_000_000
    num_envs: int = 1024
    batch_size: int = 256
    h_dim: int = 256
    n_hidden: int = 2
    skip_connections: int = 4
    use_relu: bool = False
    repr_dim: int = 64
    use_ln: bool = False
    run_dir: str = ""
    ckpt_dir: str = ""
    utd_ratio: float = 0


@contextlib.contextmanager
def _as_module(cls, module: str, name: str):
    """Make ``module.name`` resolve to `cls` while pickling (fake packages in sys.modules, restored after)."""
    added, old = [], (cls.__module__, cls.__qualname__)
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        mod = ".".join(parts[:i])
        if mod not in sys.modules:
            sys.modules[mod] = types.ModuleType(mod)
            added.append(mod)
    target = sys.modules[module]
    had = getattr(target, name, None)
    setattr(target, name, cls)
    cls.__module__, cls.__qualname__ = module, name
    try:
        yield
    finally:
        cls.__module__, cls.__qualname__ = old
        if had is None:
            delattr(target, name)
        else:
            setattr(target, name, had)
        for mod in added:
            del sys.modules[mod]


def dumps_run_config(agent, run: RunConfig, package: str = "jaxgcrl.") -> bytes:
    """run.py's args.pkl: ``pickle.dump(vars(config))`` = {"agent": CRL(...), "run": RunConfig(...)}."""
    kind = type(agent).__name__
    with _as_module(type(agent), f"{package}agents.{kind.lower()}.{kind.lower()}", kind), \
            _as_module(RunConfig, f"{package}utils.config", "RunConfig"):
        return pickle.dumps({"agent": agent, "run": run}, protocol=4)


def dumps_args(args: Args) -> bytes:
    """training.py's args.pkl (2025-02): ``pickle.dump(args)`` of utils.Args."""
    with _as_module(Args, "utils", "Args"):
        return pickle.dumps(args, protocol=4)


# ---- random parameters in JaxGCRL's layout -------------------------------------------------------------------


def module_params(rng, in_size: int, width: int, hidden: int, heads: list[int], layer_norm: bool) -> dict:
    """A flax linen module's ``params``: Dense_i (+ LayerNorm_i) numbered in call order, heads last."""
    p = {}
    for i in range(hidden):
        p[f"Dense_{i}"] = ref._layer(rng, in_size if i == 0 else width, width)
        if layer_norm:
            p[f"LayerNorm_{i}"] = ref._norm(rng, width)
    for k, out in enumerate(heads):
        p[f"Dense_{hidden + k}"] = ref._layer(rng, width, out)
    return p


def checkpoint(obs: int, goal: int, act: int, width: int = 32, hidden: int = 2, repr_dim: int = 16,
               use_ln: bool = False, seed: int = 0):
    """``(alpha_params, actor_params, critic_params)`` as CRL's save_params pickles them (actor: no LayerNorm)."""
    rng = np.random.default_rng(seed)
    actor = {"params": module_params(rng, obs + goal, width, hidden, [act, act], False)}
    critic = {"sa_encoder": {"params": module_params(rng, obs + act, width, hidden, [repr_dim], use_ln)},
              "g_encoder": {"params": module_params(rng, goal, width, hidden, [repr_dim], use_ln)}}
    return {"log_alpha": np.asarray(-0.75, np.float32)}, actor, critic


def write_run(run: Path, args_bytes: bytes, ckpt, name: str = "ckpt/final") -> Path:
    """A JaxGCRL run directory: args.pkl and the checkpoint (run.py's final: ckpt/final, no extension)."""
    (run / name).parent.mkdir(parents=True, exist_ok=True)
    (run / name).write_bytes(ref.dumps_reference(ckpt))
    (run / "args.pkl").write_bytes(args_bytes)
    return run


# ---- JaxGCRL's forward pass, in numpy (float64) --------------------------------------------------------------


def _tower(p: dict, x: np.ndarray, hidden: int, skip: int, layer_norm: bool) -> np.ndarray:
    for i in range(hidden):
        x = ref._dense(x, p[f"Dense_{i}"])
        if layer_norm:
            x = ref._ln(x, p[f"LayerNorm_{i}"])
        x = ref._swish(x)
        if skip:
            if i == 0:
                res = x
            if i > 0 and i % skip == 0:
                x = x + res
                res = x
    return x


def actor_forward(actor_vars, hidden: int, state, goal, skip: int = 4):
    """(deterministic action tanh(mean), log_std in [-5, 2]) of JaxGCRL's Actor on [state, goal]."""
    p = actor_vars["params"]
    h = _tower(p, np.concatenate([state, goal], -1).astype(np.float64), hidden, skip, False)
    mean, log_std = ref._dense(h, p[f"Dense_{hidden}"]), np.tanh(ref._dense(h, p[f"Dense_{hidden + 1}"]))
    return np.tanh(mean), -5.0 + 0.5 * 7.0 * (log_std + 1.0)


def energy_forward(critic, hidden: int, state, action, goal, use_ln: bool, skip: int = 4, eps: float = 1e-6):
    """JaxGCRL's ``norm`` energy: -sqrt(||sa_encoder(s, a) - g_encoder(g)||^2 + 1e-6)."""
    sa, g = critic["sa_encoder"]["params"], critic["g_encoder"]["params"]
    phi = ref._dense(_tower(sa, np.concatenate([state, action], -1).astype(np.float64), hidden, skip, use_ln),
                     sa[f"Dense_{hidden}"])
    psi = ref._dense(_tower(g, goal.astype(np.float64), hidden, skip, use_ln), g[f"Dense_{hidden}"])
    return -np.sqrt(((phi - psi) ** 2).sum(-1) + eps)
