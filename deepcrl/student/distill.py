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
gradient steps, so their results compare directly. The pieces follow the teacher's training: the static
setup and the jitted round over a named `DistillState` are in `deepcrl.student.round` (collection is one
jitted `deepcrl.envs.rollout` over a vmapped, auto-resetting env; training one jitted `lax.scan` of Adam steps,
`deepcrl.student.update`, per logging chunk), records go to `deepcrl.student.sinks`, and this module is the
host loop and the final report. The teacher runs only while labelling, never inside a gradient step.
Progress goes to a `progress_fn` callback; the caller decides how to show it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from deepcrl import artifacts, envs
from deepcrl._io import write_text_atomic
from deepcrl.errors import DeepcrlError
from deepcrl.evaluate import evaluate
from deepcrl.policy import JaxPolicy, RandomPolicy
from deepcrl.student.config import DistillConfig
from deepcrl.student.report import describe, plot_curves, ratio
from deepcrl.student.round import DistillState, Setup, collect_round, heldout_mse, init_state, make_setup, train_steps
from deepcrl.student.sinks import Sinks
from deepcrl.student.update import Student, make_loss  # noqa: F401  (re-exported: older imports use them)

_CHUNK = 100  # gradient steps per jitted call (one progress update and one metrics line each)


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
    wall0 = time.perf_counter()
    out = cfg.out.absolute()
    setup = make_setup(cfg)
    state = init_state(setup)
    out.mkdir(parents=True, exist_ok=True)
    initial_error = float(heldout_mse(setup, state.params["actor"]))
    eval_env = envs.make(setup.manifest.env_id)
    sinks = Sinks(out, progress_fn)
    try:
        for r in range(cfg.rounds):
            beta = 1.0 if cfg.method == "action" else cfg.beta_decay ** r
            state = collect_round(setup, state, beta)
            done = 0
            while done < setup.steps_per_round[r]:
                n = min(_CHUNK, setup.steps_per_round[r] - done)
                state, metrics = train_steps(setup, state, n)
                done += n
                record = {"step": int(state.step), "round": r, "beta": beta, "data": int(state.size),
                          **{k: float(v) for k, v in jax.device_get(metrics).items()}}
                if not all(math.isfinite(v) for v in record.values()):
                    raise DeepcrlError(f"distillation diverged at step {record['step']} (a loss became "
                                       "non-finite); lower --learning-rate.")
                sinks.record(record)
            summary = {"step": int(state.step), "round": r, "beta": beta, "data": int(state.size)}
            if cfg.round_eval_episodes:
                res = evaluate(eval_env, student_policy(setup, state), cfg.round_eval_episodes, cfg.eval_seed)
                summary.update(student_success=res.success, student_time_at_goal=res.time_at_goal)
            sinks.round_summary(summary)
    finally:
        sinks.close()
    return _finish(setup, state, sinks, initial_error, eval_env, wall0)


def student_policy(setup: Setup, state: DistillState) -> JaxPolicy:
    """The student actor of `state` as a deterministic policy."""
    m = setup.manifest
    smanifest = artifacts.Manifest(kind="student", env_id=m.env_id, network={"actor": setup.actor_cfg},
                                   action_low=m.action_low, action_high=m.action_high, obs_size=m.obs_size,
                                   goal_size=m.goal_size, action_size=m.action_size)
    return JaxPolicy(smanifest, nnx.merge(setup.actor_gd, state.params["actor"]))


def _finish(setup: Setup, state: DistillState, sinks: Sinks, initial_error: float, eval_env,
            wall0: float) -> dict[str, Any]:
    """Evaluate teacher, student and random on the same episodes; save the student artifact, report.json and
    curves.png; return the report."""
    cfg, m = setup.cfg, setup.manifest
    out = cfg.out.absolute()
    sizes = {"obs_size": m.obs_size, "goal_size": m.goal_size, "action_size": m.action_size}
    teacher_policy = JaxPolicy(m, setup.teacher.actor)
    student = student_policy(setup, state)
    res_t = evaluate(eval_env, teacher_policy, cfg.eval_episodes, cfg.eval_seed)
    res_s = evaluate(eval_env, student, cfg.eval_episodes, cfg.eval_seed)
    res_r = evaluate(eval_env, RandomPolicy(m.obs_size, m.goal_size, m.action_size, cfg.eval_seed,
                                            m.action_low, m.action_high), cfg.eval_episodes, cfg.eval_seed)
    final_error = float(heldout_mse(setup, state.params["actor"]))
    t_info = describe(teacher_policy, setup.teacher.actor, res_t,
                      {"dir": str(cfg.run.absolute()), "checkpoint_hash": m.checkpoint_hash,
                       "network": m.network["actor"]})
    s_info = describe(student, student.module, res_s, {"network": setup.actor_cfg})
    step = int(state.step)
    report = {
        "out": str(out),
        "env_id": m.env_id,
        "method": cfg.method,
        "represent": cfg.represent,
        "loss": cfg.loss,
        "normalize": cfg.normalize,
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
        "rounds": sinks.rounds,
        "eval": {"episodes": cfg.eval_episodes, "seed": cfg.eval_seed},
        "data": {"labelled_states": setup.capacity, "gradient_steps": step},
        "config": {k: v for k, v in vars(cfg).items()},
        "machine": {"platform": jax.default_backend(), "devices": str(jax.devices()[0])},
    }
    network = {"actor": setup.actor_cfg}
    trained = nnx.merge(setup.graphdef, state.params)
    ckpt = {"actor": nnx.to_pure_dict(nnx.state(trained.actor, nnx.Param))}
    if trained.critic is not None:
        network["critic"] = setup.critic_cfg
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
    plot_curves(out / "curves.png", sinks.records, sinks.rounds, res_t.success, res_r.success, initial_error)
    write_text_atomic(out / artifacts.REPORT, json.dumps(report, indent=2, default=str))
    return report
