"""Distil a deep teacher artifact into a shallow student artifact.

The run is a few data-collection rounds, each followed by gradient steps on everything collected so far:

    for round r:   collect   num_envs x unroll_length states; at each step the teacher acts with
                             probability beta_r (+ exploration noise), the student otherwise; every visited
                             state is labelled with the teacher's deterministic action (and, with
                             --represent, its critic representations and actor features)
                   aggregate into one fixed-capacity buffer on the device
                   train     steps / rounds Adam steps on minibatches drawn from the whole buffer

``--method action`` keeps beta_r = 1 (states from teacher rollouts only, i.e. offline behaviour cloning);
``--method dagger`` decays it, beta_r = beta_decay**r, so later rounds visit the states the student itself
reaches and the teacher says what to do there. Both methods see the same number of labelled states and
gradient steps, so their results compare directly. Collection (`deepcrl.student.collect`) is one jitted
`deepcrl.envs.rollout` over a vmapped, auto-resetting env; training is one jitted `lax.scan` over Adam steps
per logging chunk. The teacher runs only while labelling, never inside a gradient step. Progress goes to a
`progress_fn` callback; the caller decides how to show it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from deepcrl import artifacts, envs
from deepcrl._io import write_text_atomic
from deepcrl.envs.wrappers import wrap_for_training
from deepcrl.errors import DeepcrlError
from deepcrl.evaluate import evaluate
from deepcrl.policy import JaxPolicy, RandomPolicy
from deepcrl.student import losses
from deepcrl.student.collect import Teacher, make_collector, teacher_features
from deepcrl.student.config import DistillConfig
from deepcrl.student.networks import actor_from_config, critic_from_config
from deepcrl.student.report import describe, plot_curves, ratio

_CHUNK = 100  # gradient steps per jitted call (one progress update and one metrics line each)
_HELDOUT = 2048  # teacher-labelled states kept apart to measure the student's action error


# ---- training --------------------------------------------------------------------------------------------


class Student(nnx.Module):
    """Everything the student trains: the actor, and with --represent the encoders and feature projection."""

    def __init__(self, actor_cfg: dict, critic_cfg: dict | None, teacher_width: int | None, seed: int):
        self.actor = actor_from_config(actor_cfg, seed=seed)
        self.critic = critic_from_config(critic_cfg, seed=seed + 1) if critic_cfg is not None else None
        self.projection = (nnx.Linear(self.actor.torso.out_size, teacher_width, rngs=nnx.Rngs(seed + 2))
                           if teacher_width else None)


def make_loss(cfg: DistillConfig, graphdef) -> Callable:
    """``loss(params, batch) -> (total, metrics)`` for the configured objectives."""
    kl = cfg.loss == "kl"

    def loss_fn(params, batch):
        model = nnx.merge(graphdef, params)
        x = jnp.concatenate([batch["obs"], batch["goal"]], axis=-1)
        h = model.actor.features(x)
        mean, log_std = model.actor.heads(h)
        mse = losses.action_mse(mean, batch["t_mean"])
        metrics = {"action_mse": mse}
        if kl:
            total = metrics["action_kl"] = losses.gaussian_kl(mean, log_std, batch["t_mean"], batch["t_log_std"])
        else:
            total = mse
        if model.critic is not None:
            t_act = jnp.tanh(batch["t_mean"])
            phi, psi = model.critic.phi(batch["obs"], t_act), model.critic.psi(batch["goal"])
            metrics["repr_mse"] = losses.repr_mse(phi, batch["t_phi"]) + losses.repr_mse(psi, batch["t_psi"])
            metrics["energy_nce"] = losses.energy_ranking_nce(phi, psi, batch["t_phi"], batch["t_psi"])
            total = total + cfg.repr_coef * metrics["repr_mse"] + cfg.nce_coef * metrics["energy_nce"]
        if model.projection is not None:
            metrics["feature_mse"] = losses.feature_match(model.projection(h), batch["t_feat"])
            total = total + cfg.feature_coef * metrics["feature_mse"]
        metrics["loss"] = total
        return total, metrics

    return loss_fn


def make_train_chunk(loss_fn: Callable, optimizer: optax.GradientTransformation, batch_size: int,
                     chunk: int) -> Callable:
    """Jitted ``chunk`` Adam steps on minibatches drawn uniformly from ``buffer[:size]``."""

    @jax.jit
    def train_chunk(params, opt_state, buffer, size, key):
        def body(carry, key):
            params, opt_state = carry
            idx = jax.random.randint(key, (batch_size,), 0, size)
            batch = jax.tree.map(lambda a: a[idx], buffer)
            (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), metrics

        (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), jax.random.split(key, chunk))
        return params, opt_state, jax.tree.map(jnp.mean, metrics)

    return train_chunk


# ---- the run ---------------------------------------------------------------------------------------------


def distill(cfg: DistillConfig, progress_fn: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Distil ``cfg.run`` (the teacher) into a student at ``cfg.out``.

    Args:
        cfg: the run's configuration (checked when it was built).
        progress_fn: called after every chunk of gradient steps with that chunk's record (one dict, the line
            written to metrics.jsonl: ``step`` out of ``cfg.distill_steps``, ``round`` (0-based) out of
            ``cfg.rounds``, ``loss``, ``heldout_action_mse``, ...), as `deepcrl.teacher.train.train`'s is.

    Returns:
        The report (also written to ``out/report.json``): teacher vs student vs random evaluation on the same
        episodes, parameter counts, FLOPs and single-action latency of each, their ratios, and the student's
        held-out action error before and after training.
    """
    hidden = cfg.hidden_sizes()
    out = cfg.out.absolute()
    wall0 = time.perf_counter()
    teacher = Teacher(cfg.run, need_critic=cfg.represent)
    m = teacher.manifest
    sizes = {"obs_size": m.obs_size, "goal_size": m.goal_size, "action_size": m.action_size}
    actor_cfg = {**sizes, "hidden": list(hidden), "layer_norm": cfg.layer_norm, "gaussian": cfg.loss == "kl"}
    critic_cfg = teacher_width = None
    if cfg.represent:
        critic_cfg = {**sizes, "hidden": list(hidden), "layer_norm": cfg.layer_norm,
                      "repr_size": int(m.network["critic"].get("repr_size", 64))}
        probe = jax.ShapeDtypeStruct((1, m.obs_size + m.goal_size), jnp.float32)
        teacher_width = int(jax.eval_shape(lambda x: teacher_features(teacher.actor, x), probe).shape[-1])
    model = Student(actor_cfg, critic_cfg, teacher_width, cfg.seed)
    graphdef, params = nnx.split(model)
    actor_gd = nnx.split(model.actor)[0]

    env = teacher.env
    length = int(cfg.unroll_length or env.goal_spec.episode_length)
    benv = wrap_for_training(env)
    reset = jax.jit(benv.reset)
    collect = make_collector(benv, teacher.actor, teacher.critic, actor_gd, length, cfg.noise,
                             m.action_low, m.action_high, features=cfg.represent)
    teacher_state = teacher.state()

    key = jax.random.PRNGKey(cfg.seed)
    key, k_held, k_reset = jax.random.split(key, 3)
    # Held-out states: a separate teacher-driven rollout, never trained on.
    _, held = collect(teacher_state, params["actor"], reset(jax.random.split(k_held, cfg.num_envs)),
                      k_held, 1.0)
    take = np.random.default_rng(cfg.seed).permutation(held["obs"].shape[0])[:_HELDOUT]
    held = {k: held[k][take] for k in ("obs", "goal", "t_mean")}

    @jax.jit
    def heldout_mse(actor_state):
        actor = nnx.merge(actor_gd, actor_state)
        return losses.action_mse(actor(jnp.concatenate([held["obs"], held["goal"]], -1))[0], held["t_mean"])

    steps_per_round = [cfg.distill_steps // cfg.rounds + (r < cfg.distill_steps % cfg.rounds)
                       for r in range(cfg.rounds)]
    schedule = optax.cosine_decay_schedule(cfg.learning_rate, max(cfg.distill_steps, 1), alpha=0.05)
    optimizer = optax.adam(schedule)
    opt_state = optimizer.init(params)
    train_chunk = {}
    loss_fn = make_loss(cfg, graphdef)
    per_round = length * cfg.num_envs
    buffer = None
    env_state = reset(jax.random.split(k_reset, cfg.num_envs))
    out.mkdir(parents=True, exist_ok=True)
    records, round_log = [], []
    initial_error = float(heldout_mse(params["actor"]))
    step = 0

    eval_env = envs.make(m.env_id)
    teacher_policy = JaxPolicy(m, teacher.actor)

    def student_policy() -> JaxPolicy:
        smanifest = artifacts.Manifest(kind="student", env_id=m.env_id, network={"actor": actor_cfg},
                                       action_low=m.action_low, action_high=m.action_high, **sizes)
        return JaxPolicy(smanifest, nnx.merge(actor_gd, params["actor"]))

    with open(out / artifacts.METRICS, "w") as log:
        for r in range(cfg.rounds):
            beta = 1.0 if cfg.method == "action" else cfg.beta_decay ** r
            key, k_col = jax.random.split(key)
            env_state, data = collect(teacher_state, params["actor"], env_state, k_col, beta)
            data.pop("acted"), data.pop("teacher_acted")
            if buffer is None:  # one capacity for all rounds keeps the jitted training step's shapes fixed
                buffer = jax.tree.map(lambda a: jnp.zeros((per_round * cfg.rounds,) + a.shape[1:], a.dtype), data)
            offset = r * per_round
            buffer = jax.tree.map(lambda b, d, at=offset: jax.lax.dynamic_update_slice_in_dim(b, d, at, 0),
                                  buffer, data)
            size = jnp.int32((r + 1) * per_round)
            done_in_round = 0
            while done_in_round < steps_per_round[r]:
                n = min(_CHUNK, steps_per_round[r] - done_in_round)
                if n not in train_chunk:
                    train_chunk[n] = make_train_chunk(loss_fn, optimizer, cfg.batch_size, n)
                key, k_train = jax.random.split(key)
                params, opt_state, metrics = train_chunk[n](params, opt_state, buffer, size, k_train)
                done_in_round += n
                step += n
                record = {"step": step, "round": r, "beta": beta, "data": int(size),
                          **{k: float(v) for k, v in metrics.items()},
                          "heldout_action_mse": float(heldout_mse(params["actor"]))}
                if not all(math.isfinite(v) for v in record.values()):
                    raise DeepcrlError(f"distillation diverged at step {step} (a loss became non-finite); "
                                       "lower --learning-rate.")
                records.append(record)
                log.write(json.dumps(record) + "\n")
                log.flush()
                if progress_fn is not None:
                    progress_fn(dict(record))
            summary = {"step": step, "round": r, "beta": beta, "data": int(size)}
            if cfg.round_eval_episodes:
                res = evaluate(eval_env, student_policy(), cfg.round_eval_episodes, cfg.eval_seed)
                summary.update(student_success=res.success, student_time_at_goal=res.time_at_goal)
            round_log.append(summary)
            log.write(json.dumps({"round_summary": summary}) + "\n")

    # ---- evaluate teacher, student and random on the same episodes, then save ----
    student = student_policy()
    res_t = evaluate(eval_env, teacher_policy, cfg.eval_episodes, cfg.eval_seed)
    res_s = evaluate(eval_env, student, cfg.eval_episodes, cfg.eval_seed)
    res_r = evaluate(eval_env, RandomPolicy(m.obs_size, m.goal_size, m.action_size, cfg.eval_seed,
                                            m.action_low, m.action_high), cfg.eval_episodes, cfg.eval_seed)
    final_error = float(heldout_mse(params["actor"]))
    t_info = describe(teacher_policy, teacher.actor, res_t,
                      {"dir": str(cfg.run.absolute()), "checkpoint_hash": m.checkpoint_hash,
                       "network": m.network["actor"]})
    s_info = describe(student, student.module, res_s, {"network": actor_cfg})
    report = {
        "out": str(out),
        "env_id": m.env_id,
        "method": cfg.method,
        "represent": cfg.represent,
        "loss": cfg.loss,
        "teacher": t_info,
        "student": s_info,
        "random": {"eval": res_r.as_dict()},
        "ratios": {
            "success_retained": ratio(res_s.success, res_t.success),
            "time_at_goal_retained": ratio(res_s.time_at_goal, res_t.time_at_goal),
            "params": ratio(t_info["params"], s_info["params"]),
            "flops": ratio(t_info["flops_per_action"], s_info["flops_per_action"]),
            "latency": ratio(t_info["latency_us"], s_info["latency_us"]),
        },
        "action_error": {"heldout_mse_initial": initial_error, "heldout_mse_final": final_error,
                         "reduction": ratio(initial_error, final_error)},
        "rounds": round_log,
        "eval": {"episodes": cfg.eval_episodes, "seed": cfg.eval_seed},
        "data": {"labelled_states": per_round * cfg.rounds, "gradient_steps": step},
        "config": {k: v for k, v in vars(cfg).items()},
        "machine": {"platform": jax.default_backend(), "devices": str(jax.devices()[0])},
    }
    network = {"actor": actor_cfg}
    trained = nnx.merge(graphdef, params)
    ckpt = {"actor": nnx.to_pure_dict(nnx.state(trained.actor, nnx.Param))}
    if trained.critic is not None:
        network["critic"] = critic_cfg
        ckpt["critic"] = nnx.to_pure_dict(nnx.state(trained.critic, nnx.Param))
    metrics = {"success": res_s.success, "time_at_goal": res_s.time_at_goal,
               "teacher_success": res_t.success, "heldout_action_mse": final_error,
               "success_retained": report["ratios"]["success_retained"] or 0.0}
    manifest = artifacts.Manifest(kind="student", env_id=m.env_id, action_low=m.action_low,
                                  action_high=m.action_high, network=network, step=step,
                                  metrics={k: float(v) for k, v in metrics.items()},
                                  parent_hash=m.checkpoint_hash, **sizes)
    written = artifacts.save(out, manifest, ckpt)
    report["student"]["checkpoint_hash"] = written.checkpoint_hash
    report["wall_s"] = time.perf_counter() - wall0
    plot_curves(out / artifacts.CURVES, records, round_log, res_t.success, res_r.success, initial_error)
    write_text_atomic(out / artifacts.REPORT, json.dumps(report, indent=2, default=str))
    return report
