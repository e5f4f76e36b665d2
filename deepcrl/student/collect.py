"""Distillation's data: the loaded teacher, and one rollout that mixes teacher and student and labels every state.

At every step the teacher acts with probability beta (plus Gaussian exploration noise), the student otherwise;
every visited state is labelled with the teacher's deterministic action (and, when asked, its critic
representations and actor features). The loop is `deepcrl.envs.rollout` over a vmapped, auto-resetting env.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from deepcrl import envs
from deepcrl.envs.rollout import rollout
from deepcrl.errors import DeepcrlError
from deepcrl.policy import load_networks


class Teacher:
    """A loaded teacher artifact: manifest, env, actor and (when needed) critic modules."""

    def __init__(self, run_dir: str | Path, need_critic: bool):
        self.dir = Path(run_dir)
        nets = load_networks(run_dir, kind="teacher", critic="--represent needs" if need_critic else None)
        self.manifest, self.actor, self.critic = nets.manifest, nets.actor, nets.critic
        m = self.manifest
        self.env = envs.make(m.env_id)
        spec = self.env.goal_spec
        have = (spec.obs_size, spec.goal_size, self.env.action_size)
        if have != (m.obs_size, m.goal_size, m.action_size):
            raise DeepcrlError(
                f"the teacher at {run_dir} was trained on {m.env_id} with observation/goal/action sizes "
                f"{m.obs_size}/{m.goal_size}/{m.action_size}, but {m.env_id} now has {have[0]}/{have[1]}/{have[2]}; "
                "retrain the teacher on the current env.")

    def state(self) -> dict:
        """The modules' state, as `make_collector`'s `collect` takes it."""
        out = {"actor": nnx.state(self.actor)}
        if self.critic is not None:
            out["critic"] = nnx.state(self.critic)
        return out


def teacher_features(actor: nnx.Module, x: jax.Array) -> jax.Array:
    """The teacher actor's last hidden features (the input of its heads), x = [observation, goal]."""
    return actor.tower(x).astype(jnp.float32)


def make_collector(env, teacher_actor: nnx.Module, teacher_critic: nnx.Module | None, student_graphdef,
                   length: int, noise: float, action_low: float = -1.0, action_high: float = 1.0,
                   features: bool = False) -> Callable:
    """A jitted rollout that mixes teacher and student actions and labels every visited state.

    Args:
        env: a batched env from `wrap_for_training`.
        teacher_actor, teacher_critic: teacher modules (critic None unless representations are labelled).
        student_graphdef: graphdef of the student actor.
        length: steps per rollout.
        noise: std of the Gaussian noise on the teacher's actions when it drives.
        action_low, action_high: the env's action bounds (the policies act in [-1, 1]).
        features: also record the teacher actor's hidden features.

    Returns:
        ``collect(teacher_state, student_state, env_state, key, beta) -> (env_state, data)``; ``data`` maps
        ``obs, goal, t_mean, t_log_std`` (+ ``t_phi, t_psi``, ``t_feat``) to arrays [length * num_envs, ...],
        ``acted`` is the action the env received (unit scale) and ``teacher_acted`` whether the teacher chose it.
    """
    t_actor_gd = nnx.split(teacher_actor)[0]
    t_critic_gd = nnx.split(teacher_critic)[0] if teacher_critic is not None else None
    half_range = 0.5 * (action_high - action_low)

    @jax.jit
    def collect(teacher_state, student_state, env_state, key, beta):
        t_actor = nnx.merge(t_actor_gd, teacher_state["actor"])
        critic = nnx.merge(t_critic_gd, teacher_state["critic"]) if t_critic_gd is not None else None
        student = nnx.merge(student_graphdef, student_state)

        def act(obs, goal, key):
            x = jnp.concatenate([obs, goal], axis=-1)
            t_mean, t_log_std = t_actor(x)
            t_act = jnp.tanh(t_mean)
            k_mix, k_noise = jax.random.split(key)
            use_teacher = jax.random.bernoulli(k_mix, beta, (obs.shape[0],))
            noisy = jnp.clip(t_act + noise * jax.random.normal(k_noise, t_act.shape), -1.0, 1.0)
            unit = jnp.where(use_teacher[:, None], noisy, student.act(obs, goal))
            labels = {"t_mean": t_mean, "t_log_std": t_log_std, "acted": unit, "teacher_acted": use_teacher}
            if critic is not None:
                labels["t_phi"], labels["t_psi"] = critic.phi(obs, t_act), critic.psi(goal)
            if features:
                labels["t_feat"] = teacher_features(t_actor, x)
            return action_low + (unit + 1.0) * half_range, labels

        env_state, steps = rollout(env.step, act, env_state, env.goal_spec, length, key)
        data = {"obs": steps.obs, "goal": steps.goal, **steps.aux}
        return env_state, jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), data)

    return collect
