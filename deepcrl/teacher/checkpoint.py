"""What a teacher run keeps on disk: the resumable train state (Orbax) and the artifact (manifest + params).

The train state is saved as its flat list of leaves (keys ``00000``, ``00001``, ...) and restored into the
structure and shardings of a freshly initialised state, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from deepcrl import artifacts
from deepcrl.errors import DeepcrlError
from deepcrl.teacher.iteration import Setup, TrainState

TRAIN_STATE_DIR = "train_state"


def save_train_state(run_dir: Path, state: TrainState) -> None:
    """Write the whole train state as an Orbax checkpoint; the previous one is replaced only once complete."""
    leaves = jax.device_get(jax.tree.leaves(state))
    tree = {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    artifacts.write_checkpoint_swapped(run_dir / TRAIN_STATE_DIR, tree)


def load_train_state(run_dir: Path, like: TrainState, shardings) -> TrainState:
    """Restore a train state saved by `save_train_state` into the structure (and shardings) of `like`.

    Raises:
        DeepcrlError: no checkpoint, an unreadable one (the Orbax error is chained as the cause), or one
            written for other shapes.
    """
    import orbax.checkpoint as ocp

    path = (run_dir / TRAIN_STATE_DIR).absolute()
    if not path.is_dir():
        raise DeepcrlError(f"cannot resume: {run_dir} holds no training checkpoint ({TRAIN_STATE_DIR}/).")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            tree = ckptr.restore(path)
    except Exception as exc:  # Orbax raises many types (OSError, ValueError, KeyError, ...); the cause is kept
        raise DeepcrlError(f"cannot resume: the training checkpoint in {run_dir} is corrupt or unreadable "
                           f"({type(exc).__name__}).") from exc
    leaves, treedef = jax.tree.flatten(like)
    got = [tree[k] for k in sorted(tree)]
    if len(got) != len(leaves) or any(np.shape(a) != np.shape(b) for a, b in zip(got, leaves)):
        raise DeepcrlError(f"cannot resume: the training checkpoint in {run_dir} was written for another env, "
                           "network, replay shape or deepcrl version; use the same settings or a new --out.")
    restored = jax.tree.unflatten(treedef, [np.asarray(a, dtype=np.asarray(b).dtype) for a, b in zip(got, leaves)])
    return jax.device_put(restored, shardings)


def artifact_params(state: TrainState) -> dict:
    """The artifact's checkpoint pytree: nnx pure dicts of actor and critic parameters."""
    return {"actor": nnx.to_pure_dict(jax.device_get(state.learner.actor)),
            "critic": nnx.to_pure_dict(jax.device_get(state.learner.critic))}


def make_manifest(setup: Setup, env_steps: int, metrics: dict) -> artifacts.Manifest:
    """The teacher artifact's manifest: sizes, network configs, the training config, step and metrics."""
    cfg = setup.cfg
    train_cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    return artifacts.Manifest(
        kind="teacher", env_id=cfg.env, obs_size=setup.spec.obs_size, goal_size=setup.spec.goal_size,
        action_size=setup.env.action_size,
        network={"actor": setup.actor_cfg, "critic": setup.critic_cfg, "train": train_cfg},
        step=int(env_steps),
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)},
    )


def actor_module(setup: Setup, state: TrainState):
    """The current actor as an nnx module (on the host)."""
    return setup.nets.actor(jax.device_get(state.learner.actor))
