"""What a teacher run keeps on disk: the resumable train state (Orbax) and the artifact (manifest + params).

The train state is saved as its flat list of leaves (keys ``00000``, ``00001``, ...) and restored into the
structure and shardings of a freshly initialised state, so a resumed run continues bit for bit. Leaves with no
elements (MJX's pipeline state has a dozen, e.g. ``act`` of a model without actuator activations) are left out:
newer Orbax (0.12) refuses to save them, and the fresh state already holds them.
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

TRAIN_STATE_DIR = artifacts.TRAIN_STATE  # the run directory's name for it (artifacts.py)


def save_train_state(run_dir: Path, state: TrainState) -> None:
    """Write the whole train state as an Orbax checkpoint; the previous one is replaced only once complete.

    The leaves stay global arrays: in a multi-process job every process calls this and writes its own shards.
    """
    tree = {f"{i:05d}": x for i, x in enumerate(jax.tree.leaves(state)) if np.size(x)}
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
    leaves, treedef = jax.tree.flatten(like)
    # Restored straight into the target shardings: each process reads only its own shards, whatever the
    # process / device layout of the run that wrote the checkpoint.
    target = {f"{i:05d}": jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s)
              for i, (x, s) in enumerate(zip(leaves, jax.tree.leaves(shardings)))}
    try:
        with ocp.StandardCheckpointer() as ckptr:
            saved = ckptr.metadata(path).item_metadata
            shapes = {k: tuple(v.shape) for k, v in saved.items()}
            target = {k: t for k, t in target.items() if math.prod(t.shape)}  # empty leaves come from `like`
            if shapes == {k: t.shape for k, t in target.items()}:
                tree = ckptr.restore(path, target)
    except Exception as exc:  # Orbax raises many types (OSError, ValueError, KeyError, ...); the cause is kept
        raise DeepcrlError(f"cannot resume: the training checkpoint in {run_dir} is corrupt or unreadable "
                           f"({type(exc).__name__}).") from exc
    if shapes != {k: t.shape for k, t in target.items()}:
        raise DeepcrlError(f"cannot resume: the training checkpoint in {run_dir} was written for another env, "
                           "network, replay shape or deepcrl version; use the same settings or a new --out.")
    return jax.tree.unflatten(treedef, [tree.get(f"{i:05d}", x) for i, x in enumerate(leaves)])


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
