"""One training iteration of the contrastive RL teacher, as one jitted pure function.

`iteration(setup, state, learning_rate)`: every env takes ``unroll_length`` steps with the stochastic actor,
the unroll goes into the trajectory replay, then ``sgd_steps`` SGD steps (`deepcrl.teacher.update.update`)
run in a `lax.scan`, each on a batch with hindsight goals. Everything the run needs to continue lives in one
`TrainState` pytree, so a checkpoint of it resumes bit for bit.

`Setup` is the static side of a run and is hashable by what shapes the compiled program (the config without
its bookkeeping fields, and the device mesh), so `iteration` is jitted with the setup as a static argument:
a repeated or resumed run in the same process finds its program in JAX's own cache and does not compile again.

With several devices the envs, the replay (env axis) and each batch are sharded over a 1-D mesh and
parameters are replicated; XLA inserts the collectives, so the same code runs on one CPU, many GPUs, or the
devices of many processes (`deepcrl.teacher.distributed`: the mesh then spans every process's devices).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from deepcrl import envs
from deepcrl._gpu import has_gpu
from deepcrl.envs.rollout import rollout
from deepcrl.envs.wrappers import wrap_for_training
from deepcrl.teacher import diagnostics, losses, networks, replay
from deepcrl.teacher.config import TrainConfig
from deepcrl.teacher.update import Hyper, Learner, Nets, init_learner, update


class TrainState(NamedTuple):
    """Everything a run needs to continue: a checkpoint of this resumes bit for bit."""

    learner: Learner
    replay: replay.ReplayState
    env_state: Any
    rng: jax.Array
    iteration: jax.Array
    env_steps: jax.Array


# Config fields that do not change the compiled iteration (the learning rate is traced).
_BOOKKEEPING = dict(out=Path("."), steps=1, resume=False, eval_every=1, eval_episodes=1, max_minutes=None,
                    learning_rate=1.0, tensorboard=False, json=False)


@dataclasses.dataclass(frozen=True)
class Setup:
    """The static side of a run: env, network definitions, update hyper-parameters, mesh.

    Equal (and hashing alike) for configs that compile to the same program: only ``key`` and ``mesh`` count.
    """

    key: TrainConfig
    """The config with its bookkeeping fields (out, steps, resume, evaluation, learning rate) blanked."""
    mesh: Mesh
    cfg: TrainConfig = dataclasses.field(compare=False)
    env: Any = dataclasses.field(compare=False)
    train_env: Any = dataclasses.field(compare=False)
    actor_cfg: dict = dataclasses.field(compare=False)
    critic_cfg: dict = dataclasses.field(compare=False)
    nets: Nets = dataclasses.field(compare=False)
    hyper: Hyper = dataclasses.field(compare=False)

    @property
    def spec(self):
        return self.env.goal_spec

    @property
    def steps_per_iteration(self) -> int:
        return self.cfg.num_envs * self.cfg.unroll_length


def network_configs(cfg: TrainConfig, env) -> tuple[dict, dict]:
    """Actor and critic builder configs (with sizes), as written into the artifact's manifest."""
    sizes = {"obs_size": env.goal_spec.obs_size, "goal_size": env.goal_spec.goal_size,
             "action_size": env.action_size}
    extra = {"remat": cfg.remat, "dtype": "bfloat16" if cfg.bf16 else "float32",
             "residual_init": cfg.residual_init}
    actor = {**sizes, "depth": cfg.actor_depth, "width": cfg.width, **extra}
    critic = {**sizes, "depth": cfg.critic_depth, "width": cfg.width, "repr_size": cfg.repr_size, **extra}
    return actor, critic


def make_setup(cfg: TrainConfig, devices: list | None = None) -> Setup:
    """Resolve and check the config, build the env and network definitions. Nothing is compiled here."""
    devices = list(devices or jax.devices())  # every process's devices in a multi-process job
    cfg = cfg.resolved(on_gpu=has_gpu(devices)).validate(len(devices))
    env = envs.make(cfg.env)
    actor_cfg, critic_cfg = network_configs(cfg, env)
    nets, _, _ = Nets.split(networks.actor_from_config(actor_cfg, 0), networks.critic_from_config(critic_cfg, 0))
    hyper = Hyper(target_entropy=cfg.target_entropy_scale * env.action_size, logsumexp_coef=cfg.logsumexp_coef,
                  actor_random_goal_frac=cfg.actor_random_goal_frac)
    return Setup(key=dataclasses.replace(cfg, **_BOOKKEEPING), mesh=Mesh(np.array(devices), ("data",)), cfg=cfg,
                 env=env, train_env=wrap_for_training(env), actor_cfg=actor_cfg, critic_cfg=critic_cfg,
                 nets=nets, hyper=hyper)


@functools.partial(jax.jit, static_argnums=0)
def _reset(setup: Setup, keys: jax.Array):
    return setup.train_env.reset(keys)


def init_state(setup: Setup) -> TrainState:
    """A fresh train state for the config's seed (sharded over the setup's mesh)."""
    cfg = setup.cfg
    key = jax.random.PRNGKey(cfg.seed)
    k_actor, k_critic, k_env, key = jax.random.split(key, 4)
    seed_of = lambda k: int(jax.random.randint(k, (), 0, 2**31 - 1))  # noqa: E731
    actor = nnx.state(networks.actor_from_config(setup.actor_cfg, seed_of(k_actor)), nnx.Param)
    critic = nnx.state(networks.critic_from_config(setup.critic_cfg, seed_of(k_critic)), nnx.Param)
    state = TrainState(
        learner=init_learner(actor, critic, cfg.learning_rate),
        replay=replay.init(cfg.replay_capacity, cfg.num_envs, setup.spec.obs_size, setup.env.action_size),
        env_state=_reset(setup, jax.random.split(k_env, cfg.num_envs)), rng=key,
        iteration=jnp.zeros((), jnp.int32), env_steps=jnp.zeros((), jnp.int32),
    )
    return jax.device_put(state, state_shardings(setup, state))


def state_shardings(setup: Setup, state: TrainState):
    """Env states and replay split over devices along the env axis; everything else replicated."""
    mesh = setup.mesh
    rep = NamedSharding(mesh, P())
    by_env = NamedSharding(mesh, P("data"))
    by_env_time_major = NamedSharding(mesh, P(None, "data"))
    n = setup.cfg.num_envs

    def env_leaf(x):
        return by_env if getattr(x, "ndim", 0) >= 1 and x.shape[0] == n else rep

    buf = state.replay
    return state._replace(
        learner=jax.tree.map(lambda _: rep, state.learner),
        replay=replay.ReplayState(obs=by_env_time_major, action=by_env_time_major,
                                  episode_id=by_env_time_major, inserted=rep) if buf is not None else None,
        env_state=jax.tree.map(env_leaf, state.env_state), rng=rep, iteration=rep, env_steps=rep,
    )


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def iteration(setup: Setup, state: TrainState, learning_rate: jax.Array) -> tuple[TrainState, dict]:
    """Collect an unroll with every env, then ``sgd_steps`` updates; returns the new state and mean metrics
    (with the per-block norms of `deepcrl.teacher.diagnostics.norms` under ``"norms"``).

    Args:
        setup: the run's static side (`make_setup`); equal setups share one compiled program.
        state: the train state (donated: do not use it after the call).
        learning_rate: Adam's learning rate for actor, critic and alpha (traced: changing it does not compile).
    """
    cfg, spec, env = setup.cfg, setup.spec, setup.train_env
    batch_sharding = NamedSharding(setup.mesh, P("data"))

    # -- collect -------------------------------------------------------------------------------------------
    actor = setup.nets.actor(state.learner.actor)

    def act(s, g, key):
        mean, log_std = actor(jnp.concatenate([s, g], axis=-1))
        return losses.sample_tanh_gaussian(mean, log_std, key)[0]

    rng, k_collect, k_sgd = jax.random.split(state.rng, 3)
    env_state, unroll = rollout(env.step, act, state.env_state, spec, cfg.unroll_length, k_collect,
                                keep_info=("episode_id",))
    buf = replay.insert(state.replay, unroll.obs, unroll.action, unroll.info["episode_id"])
    index = replay.prepare(buf)

    # -- update --------------------------------------------------------------------------------------------
    def sgd_step(learner: Learner, key):
        k_sample, _ = jax.random.split(key)
        batch = replay.sample(buf, index, k_sample, cfg.batch_size, spec.goal_indices, cfg.discount)
        s, a, g = (jax.lax.with_sharding_constraint(x, batch_sharding) for x in (batch.obs, batch.action, batch.goal))
        learner, metrics = update(setup.nets, setup.hyper, learner, (s, a, g), key)
        metrics["goal_offset"] = jnp.mean(batch.offset.astype(jnp.float32))
        return learner, metrics

    learner, metrics = jax.lax.scan(sgd_step, state.learner.with_learning_rate(learning_rate),
                                    jax.random.split(k_sgd, cfg.sgd_steps))
    metrics = jax.tree.map(jnp.mean, metrics)
    metrics["train_success"] = jnp.mean(unroll.metrics["success"])
    # -- per-block norms (one more batch, with a key no SGD step uses: the run's numbers do not change) ------
    k_norms = jax.random.fold_in(k_sgd, cfg.sgd_steps)
    batch = replay.sample(buf, index, k_norms, cfg.batch_size, spec.goal_indices, cfg.discount)
    sag = tuple(jax.lax.with_sharding_constraint(x, batch_sharding) for x in (batch.obs, batch.action, batch.goal))
    metrics["norms"] = diagnostics.norms(setup.nets, setup.hyper, learner, sag, k_norms)
    new = TrainState(learner=learner, replay=buf, env_state=env_state, rng=rng, iteration=state.iteration + 1,
                     env_steps=state.env_steps + cfg.num_envs * cfg.unroll_length)
    return new, metrics
