"""One distillation round as jitted pure functions over a named state.

`make_setup(cfg)` loads the teacher and builds everything static (student definition, optimiser, loss,
collector, the input statistics); `init_state(setup)` draws the held-out states and the fresh `DistillState`;
`collect_round(setup, state, beta)` rolls out teacher and student mixed (teacher with probability beta),
labels every visited state with the teacher and writes the labels into the fixed-capacity buffer;
`train_steps(setup, state, n)` takes n Adam steps on everything collected so far. Both are jitted once per
setup (the setup is hashed by identity), so a run compiles one collection and one training program per
chunk size.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from deepcrl.envs.wrappers import wrap_for_training
from deepcrl.student import losses
from deepcrl.student.collect import Teacher, make_collector, teacher_features
from deepcrl.student.config import DistillConfig
from deepcrl.student.update import Student, adam_steps, make_loss

HELDOUT = 2048  # teacher-labelled states kept apart to measure the student's action error
_STD_FLOOR = 1e-6  # an input whose spread is below this is left unscaled (a constant carries no information)


class DistillState(NamedTuple):
    """Everything a distillation run carries from one step to the next."""

    params: Any  # nnx.State of the `Student`
    opt_state: Any
    buffer: dict  # label buffer: obs, goal, t_mean, t_log_std (+ t_phi, t_psi, t_feat), capacity rows
    size: jax.Array  # rows of the buffer filled so far
    env_state: Any  # the collection envs, continued across rounds
    key: jax.Array
    step: jax.Array  # gradient steps taken


@dataclasses.dataclass(eq=False)
class Setup:
    """The static side of a run (hashed by identity: the jitted functions take it as a static argument)."""

    cfg: DistillConfig
    teacher: Teacher
    actor_cfg: dict
    critic_cfg: dict | None
    teacher_width: int | None
    graphdef: Any
    actor_gd: Any
    length: int
    capacity: int
    steps_per_round: list[int]
    optimizer: optax.GradientTransformation
    loss_fn: Any
    collect: Any
    reset: Any
    held: dict

    @property
    def manifest(self):
        return self.teacher.manifest


def input_stats(obs: np.ndarray, goal: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-input mean and std of [observation, goal] over states (std below 1e-6 becomes 1)."""
    x = np.concatenate([np.asarray(obs, np.float64), np.asarray(goal, np.float64)], axis=-1)
    std = x.std(axis=0)
    return x.mean(axis=0).tolist(), np.where(std < _STD_FLOOR, 1.0, std).tolist()


def make_setup(cfg: DistillConfig) -> Setup:
    """Load the teacher, roll out its held-out states (their statistics standardise the student's inputs with
    ``cfg.normalize``), and build the student, optimiser, loss and collector. Compiles only the collector."""
    teacher = Teacher(cfg.run, need_critic=cfg.represent)
    m = teacher.manifest
    sizes = {"obs_size": m.obs_size, "goal_size": m.goal_size, "action_size": m.action_size}
    length = int(cfg.unroll_length or teacher.env.goal_spec.episode_length)
    benv = wrap_for_training(teacher.env)
    reset = jax.jit(benv.reset)
    probe_cfg = {**sizes, "hidden": list(cfg.hidden_sizes()), "layer_norm": cfg.layer_norm,
                 "gaussian": cfg.loss == "kl"}
    probe_gd = nnx.split(Student(probe_cfg, None, None, cfg.seed).actor)[0]
    collect = make_collector(benv, teacher.actor, teacher.critic, probe_gd, length, cfg.noise,
                             m.action_low, m.action_high, features=cfg.represent)
    # Held-out states: a teacher-driven rollout, never trained on (its statistics are the input scale).
    k_held = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)[1]
    probe_params = nnx.state(Student(probe_cfg, None, None, cfg.seed).actor)
    _, held = collect(teacher.state(), probe_params, reset(jax.random.split(k_held, cfg.num_envs)), k_held, 1.0)
    take = np.random.default_rng(cfg.seed).permutation(held["obs"].shape[0])[:HELDOUT]
    held = {k: held[k][take] for k in ("obs", "goal", "t_mean")}
    actor_cfg = dict(probe_cfg)
    if cfg.normalize:
        actor_cfg["input_mean"], actor_cfg["input_std"] = input_stats(held["obs"], held["goal"])
    critic_cfg = teacher_width = None
    if cfg.represent:
        critic_cfg = {**sizes, "hidden": list(cfg.hidden_sizes()), "layer_norm": cfg.layer_norm,
                      "repr_size": int(m.network["critic"].get("repr_size", 64))}
        probe = jax.ShapeDtypeStruct((1, m.obs_size + m.goal_size), jnp.float32)
        teacher_width = int(jax.eval_shape(lambda x: teacher_features(teacher.actor, x), probe).shape[-1])
    graphdef = nnx.split(Student(actor_cfg, critic_cfg, teacher_width, cfg.seed))[0]
    actor_gd = nnx.split(Student(actor_cfg, None, None, cfg.seed).actor)[0]
    if cfg.normalize:  # the collector must run the normalising student
        collect = make_collector(benv, teacher.actor, teacher.critic, actor_gd, length, cfg.noise,
                                 m.action_low, m.action_high, features=cfg.represent)
    steps_per_round = [cfg.distill_steps // cfg.rounds + (r < cfg.distill_steps % cfg.rounds)
                       for r in range(cfg.rounds)]
    schedule = optax.cosine_decay_schedule(cfg.learning_rate, max(cfg.distill_steps, 1), alpha=0.05)
    return Setup(cfg=cfg, teacher=teacher, actor_cfg=actor_cfg, critic_cfg=critic_cfg,
                 teacher_width=teacher_width, graphdef=graphdef, actor_gd=actor_gd, length=length,
                 capacity=length * cfg.num_envs * cfg.rounds, steps_per_round=steps_per_round,
                 optimizer=optax.adam(schedule), loss_fn=make_loss(cfg, graphdef), collect=collect,
                 reset=reset, held=held)


def init_state(setup: Setup) -> DistillState:
    """The fresh student (``cfg.seed``), its optimiser, an empty buffer and freshly reset collection envs."""
    cfg = setup.cfg
    key = jax.random.PRNGKey(cfg.seed)
    key, _, k_reset = jax.random.split(key, 3)
    params = nnx.split(Student(setup.actor_cfg, setup.critic_cfg, setup.teacher_width, cfg.seed))[1]
    env_state = setup.reset(jax.random.split(k_reset, cfg.num_envs))
    shapes = jax.eval_shape(setup.collect, setup.teacher.state(), params["actor"], env_state, key, 1.0)[1]
    buffer = {k: jnp.zeros((setup.capacity,) + v.shape[1:], v.dtype) for k, v in shapes.items()
              if k not in ("acted", "teacher_acted")}
    return DistillState(params=params, opt_state=setup.optimizer.init(params), buffer=buffer,
                        size=jnp.zeros((), jnp.int32), env_state=env_state, key=key, step=jnp.zeros((), jnp.int32))


def collect_round(setup: Setup, state: DistillState, beta: float) -> DistillState:
    """Roll out ``num_envs x length`` steps (teacher with probability beta, else the student), label every
    state with the teacher and append the labels to the buffer (the collector is jitted)."""
    key, k_col = jax.random.split(state.key)
    env_state, data = setup.collect(setup.teacher.state(), state.params["actor"], state.env_state, k_col, beta)
    return _append(state._replace(env_state=env_state, key=key), {k: data[k] for k in state.buffer})


@jax.jit
def _append(state: DistillState, data: dict) -> DistillState:
    buffer = jax.tree.map(lambda b, d: jax.lax.dynamic_update_slice_in_dim(b, d, state.size, 0), state.buffer, data)
    rows = jax.tree.leaves(data)[0].shape[0]
    return state._replace(buffer=buffer, size=state.size + rows)


@functools.partial(jax.jit, static_argnums=(0, 2), donate_argnums=1)
def train_steps(setup: Setup, state: DistillState, steps: int) -> tuple[DistillState, dict]:
    """``steps`` Adam steps on minibatches of the buffer's filled rows; returns the state and mean metrics
    (with ``heldout_action_mse``, the squashed-action error on the held-out teacher states)."""
    key, k_train = jax.random.split(state.key)
    params, opt_state, metrics = adam_steps(setup.loss_fn, setup.optimizer, setup.cfg.batch_size, state.params,
                                            state.opt_state, state.buffer, state.size, k_train, steps)
    metrics["heldout_action_mse"] = heldout_mse(setup, params["actor"])
    return state._replace(params=params, opt_state=opt_state, key=key, step=state.step + steps), metrics


def heldout_mse(setup: Setup, actor_state) -> jax.Array:
    """Squashed-action MSE of the student on the held-out teacher states."""
    actor = nnx.merge(setup.actor_gd, actor_state)
    held = setup.held
    return losses.action_mse(actor(jnp.concatenate([held["obs"], held["goal"]], -1))[0], held["t_mean"])
