"""Training a contrastive RL teacher: the host loop around the jitted iteration.

The work is one jitted, pure function (`deepcrl.teacher.iteration.iteration`: collect an unroll, then K SGD
steps of `deepcrl.teacher.update.update`). This loop only evaluates, saves and reports: every iteration's
record goes to the sinks (metrics.jsonl, curves.png on evaluations, TensorBoard with ``tensorboard=True``) and
to the caller's ``progress_fn``; the CLI turns those into its progress display.

    >>> from deepcrl.teacher.config import TrainConfig
    >>> summary = train(TrainConfig(env="point_maze", out="runs/t"), progress_fn=print)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from deepcrl import artifacts
from deepcrl.errors import DeepcrlError
from deepcrl.teacher import distributed
from deepcrl.teacher.checkpoint import (TRAIN_STATE_DIR, actor_module, artifact_params, load_train_state,
                                        make_manifest, save_train_state)
from deepcrl.teacher.config import TrainConfig
from deepcrl.teacher.iteration import Setup, TrainState, init_state, iteration, make_setup, state_shardings
from deepcrl.teacher import sinks as sinks_mod
from deepcrl.teacher.sinks import CURVES_FILE, METRICS_FILE, Curves, MetricsFile, TensorBoard, numeric

__all__ = ["train", "evaluate_state", "TRAIN_STATE_DIR", "METRICS_FILE", "CURVES_FILE"]

ProgressFn = Callable[[dict], None]


def evaluate_state(setup: Setup, state: TrainState, episodes: int, seed: int = 12345) -> dict:
    """Deterministic-policy evaluation of the current actor with `deepcrl.evaluate.evaluate`."""
    from deepcrl.evaluate import evaluate
    from deepcrl.policy import JaxPolicy

    manifest = make_manifest(setup, 0, {})
    result = evaluate(setup.env, JaxPolicy(manifest, actor_module(setup, state)), episodes=episodes, seed=seed)
    return result.as_dict()


def _first_non_finite(metrics: dict) -> str | None:
    return next((name for name, value in metrics.items() if not np.isfinite(value)), None)


def train(cfg: TrainConfig, progress_fn: ProgressFn | None = None) -> dict:
    """Train a teacher; write the artifact, metrics.jsonl, curves.png and a resumable training checkpoint.

    Args:
        cfg: the training config (None fields take the env's defaults).
        progress_fn: called with each iteration's record (``iteration``, ``env_steps``, ``wall_s``, the
            losses, ``norms`` (per-block norms, `deepcrl.teacher.diagnostics`) and ``eval`` on evaluation
            iterations), after the record is written.
    Returns:
        Summary: ``run_dir``, ``env_steps``, ``iterations``, ``wall_s``, ``compile_s``, ``steps_per_s``,
        ``eval`` (the last evaluation: success, detour_success, ...), ``train`` (the last iteration's losses)
        and ``config`` (the resolved config).

    Raises:
        DeepcrlError: bad config (before anything is compiled), a non-finite loss (the last good checkpoint is
            kept), or a checkpoint that cannot be resumed.
    """
    if cfg.seeds is not None:  # several seeds in one vmapped program, each written as if trained alone
        from deepcrl.teacher.seeds import train_seeds

        cfg.resolved().validate()  # one-sentence errors first
        return train_seeds(cfg, progress_fn)
    # A multi-process job is joined before JAX touches a device; then every process runs this loop in lockstep
    # and only process 0 writes files and reports (the other processes' sinks are empty).
    distributed.join(cfg.coordinator, cfg.num_processes, cfg.process_id, cfg.validate_job().join_timeout_s)
    primary = distributed.is_primary()
    setup = make_setup(cfg)
    cfg = setup.cfg
    run_dir = Path(cfg.out).absolute()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepcrlError(f"cannot create the run directory {run_dir}: {exc.strerror}.") from exc
    total_iters = max(1, math.ceil(cfg.steps / setup.steps_per_iteration))

    state = init_state(setup)
    if cfg.resume:
        state = load_train_state(run_dir, state, state_shardings(setup, state))
    ckpt_steps = int(state.env_steps) if cfg.resume else None
    history: list[dict] = []
    sinks: list = []
    if primary:
        metrics_file = MetricsFile(run_dir, keep_up_to_steps=ckpt_steps)
        history = metrics_file.history
        sinks += [metrics_file, Curves(run_dir, history, title=f"{cfg.env}: depth {cfg.critic_depth}")]
        if cfg.tensorboard:
            sinks.append(TensorBoard(run_dir, resume_from_steps=ckpt_steps))
        if progress_fn is not None:
            sinks.append(progress_fn)
    lr = jnp.asarray(cfg.learning_rate, jnp.float32)

    start_iter = int(state.iteration)
    last_eval: dict = sinks_mod.last_eval(history)
    last_train: dict = {}
    clock = sinks_mod.RunClock(history, cfg.max_minutes)
    try:
        it = start_iter
        while it < total_iters:
            clock.start_iteration()
            prev_steps = int(state.env_steps)
            new_state, metrics = iteration(setup, state, lr)
            metrics = jax.device_get(metrics)
            norms = {k: [float(f"{x:.5g}") for x in v] for k, v in metrics.pop("norms", {}).items()}
            metrics = {k: float(v) for k, v in metrics.items()}
            clock.end_iteration()
            bad = _first_non_finite(metrics)
            if bad is not None:
                kept = (f"the last good checkpoint (env step {ckpt_steps:,}) is kept in {run_dir}"
                        if ckpt_steps is not None else "no checkpoint was written yet")
                raise DeepcrlError(f"training stopped at env step {prev_steps + setup.steps_per_iteration:,}:"
                                   f" the {bad.replace('_', ' ')} became non-finite ({metrics[bad]}); {kept}; "
                                   "try a lower --learning-rate.")
            state = new_state
            it += 1
            env_steps = int(state.env_steps)
            out_of_time = clock.out_of_time()
            if cfg.max_minutes is not None:
                out_of_time = distributed.agree(out_of_time)  # process 0's clock decides for all processes
            record = {"iteration": it, "env_steps": env_steps, "wall_s": clock.wall_s(),
                      **metrics, "norms": norms}
            last_train = metrics
            if it % cfg.eval_every == 0 or it == total_iters or out_of_time:
                last_eval = evaluate_state(setup, state, cfg.eval_episodes)
                record["eval"] = last_eval
                save_train_state(run_dir, state)
                artifacts.save(run_dir, make_manifest(setup, env_steps, {**metrics, **numeric(last_eval)}),
                               artifact_params(state))
                ckpt_steps = env_steps
            for sink in sinks:
                sink(record)
            if out_of_time:
                break
    finally:
        for sink in sinks:
            if hasattr(sink, "close"):
                sink.close()

    wall = clock.elapsed_s()
    done_steps = int(state.env_steps)
    return {
        "run_dir": str(run_dir), "env_steps": done_steps, "iterations": int(state.iteration),
        "wall_s": wall, "compile_s": clock.compile_s,
        "steps_per_s": (done_steps - start_iter * setup.steps_per_iteration) / max(wall, 1e-9),
        "eval": last_eval, "train": last_train,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
    }
