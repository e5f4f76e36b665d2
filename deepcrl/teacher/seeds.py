"""Several seeds in one program: `deepcrl train --seeds 0 1 2`.

The seeds' train states (parameters, optimiser states, envs, replays, PRNG keys) are stacked along a leading
seed axis and one jitted iteration runs `jax.vmap` of the single-seed `iteration` over it (as purejaxrl
vmaps its ``train``), so S seeds cost one compiled program and, where one seed leaves the device idle (a deep
tower at batch 256 on a GPU is latency-bound), nearly the time of one. Each seed's state is initialised
exactly as a single-seed run of that seed, and the host loop writes each seed's files (artifact, metrics.jsonl,
curves.png, train_state/) into ``OUT/seed_S`` as that run would: seed S of a multi-seed run equals
``deepcrl train --seed S`` up to float rounding (batched matmuls may sum in another order).

One difference in cost, not in results: the auto-reset's "any episode ended?" branch becomes a select under
vmap, so every env step also computes a reset (cheap for the point mazes; roughly one extra forward-kinematics
pass for MJX bodies).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from deepcrl import artifacts
from deepcrl.errors import DeepcrlError
from deepcrl.teacher.checkpoint import artifact_params, load_train_state, make_manifest, save_train_state
from deepcrl.teacher.config import TrainConfig
from deepcrl.teacher.iteration import Setup, init_state, iteration, make_setup, state_shardings
from deepcrl.teacher import sinks as sinks_mod
from deepcrl.teacher.sinks import Curves, MetricsFile, TensorBoard, numeric

SEED_DIR = "seed_{}"
_single = getattr(iteration, "__wrapped__", iteration)  # the un-jitted body (jit inside vmap would work too)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def seeds_iteration(setup: Setup, states, learning_rate: jax.Array):
    """`iteration` vmapped over the leading seed axis of stacked train states; metrics get that axis too."""
    return jax.vmap(lambda s: _single(setup, s, learning_rate))(states)


def seed_setup(setup: Setup, seed: int, out: Path) -> Setup:
    """The setup a single-seed run of `seed` writing to `out` would have (its manifest records that config)."""
    cfg = dataclasses.replace(setup.cfg, seed=seed, seeds=None, out=out)
    return dataclasses.replace(setup, cfg=cfg, key=dataclasses.replace(setup.key, seed=seed, seeds=None))


def _stack(states: list):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def _take(states, i: int):
    return jax.tree.map(lambda x: x[i], states)


def train_seeds(cfg: TrainConfig, progress_fn: Callable[[dict], None] | None = None) -> dict:
    """Train every seed of ``cfg.seeds`` in one vmapped program; each writes ``cfg.out/seed_S`` as if alone.

    Args:
        cfg: the training config with ``seeds`` set (``seed`` is ignored).
        progress_fn: called with each seed's record per iteration (the single-seed record plus ``seed``).
    Returns:
        ``run_dir`` (cfg.out), ``env_steps``, ``iterations``, ``wall_s``, ``compile_s``, ``steps_per_s`` (all
        seeds' env steps), ``eval`` (the seeds' mean of each numeric metric), and ``seeds`` {seed: the
        single-seed summary fields ``run_dir``, ``eval``, ``train``}.
    """
    if cfg.coordinator is not None or cfg.num_processes is not None:
        raise DeepcrlError("--seeds runs in one process; it cannot be combined with a multi-process job.")
    seeds = list(cfg.seeds)
    base = make_setup(dataclasses.replace(cfg, seed=seeds[0]))
    root = Path(base.cfg.out).absolute()
    setups = [seed_setup(base, s, root / SEED_DIR.format(s)) for s in seeds]
    for s in setups:
        try:
            Path(s.cfg.out).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeepcrlError(f"cannot create the run directory {s.cfg.out}: {exc.strerror}.") from exc
    total_iters = max(1, math.ceil(base.cfg.steps / base.steps_per_iteration))

    singles = [init_state(s) for s in setups]
    if cfg.resume:
        singles = [load_train_state(Path(s.cfg.out), st, state_shardings(s, st)) for s, st in zip(setups, singles)]
        done = {int(st.iteration) for st in singles}
        if len(done) != 1:
            raise DeepcrlError(f"cannot resume: the seeds' checkpoints in {root} are at different iterations "
                               f"({sorted(done)}); resume each seed alone or start a new --out.")
    ckpt_steps = int(singles[0].env_steps) if cfg.resume else None
    states = _stack(singles)
    del singles

    sinks = []
    for s in setups:
        metrics_file = MetricsFile(Path(s.cfg.out), keep_up_to_steps=ckpt_steps)
        seed_sinks = [metrics_file, Curves(Path(s.cfg.out), metrics_file.history,
                                           title=f"{s.cfg.env}: depth {s.cfg.critic_depth}, seed {s.cfg.seed}")]
        if cfg.tensorboard:
            seed_sinks.append(TensorBoard(Path(s.cfg.out), resume_from_steps=ckpt_steps))
        sinks.append(seed_sinks)
    history = sinks[0][0].history
    lr = jnp.asarray(base.cfg.learning_rate, jnp.float32)
    start_iter = int(states.iteration[0])
    last_eval: list[dict] = [sinks_mod.last_eval(ss[0].history) for ss in sinks]
    last_train: list[dict] = [{} for _ in seeds]
    clock = sinks_mod.RunClock(history, cfg.max_minutes)
    try:
        it = start_iter
        while it < total_iters:
            clock.start_iteration()
            prev_steps = int(states.env_steps[0])
            new_states, metrics = seeds_iteration(base, states, lr)
            metrics = jax.device_get(metrics)
            clock.end_iteration()
            norms_all = metrics.pop("norms", {})
            per_seed = [{k: float(v[i]) for k, v in metrics.items()} for i in range(len(seeds))]
            for seed, m in zip(seeds, per_seed):
                bad = next((k for k, v in m.items() if not np.isfinite(v)), None)
                if bad is not None:
                    raise DeepcrlError(
                        f"training stopped at env step {prev_steps + base.steps_per_iteration:,}: seed {seed}'s "
                        f"{bad.replace('_', ' ')} became non-finite ({m[bad]}); the seeds' last good checkpoints "
                        f"are kept in {root}; try a lower --learning-rate.")
            states = new_states
            it += 1
            env_steps = int(states.env_steps[0])
            out_of_time = clock.out_of_time()
            evaluate_now = it % base.cfg.eval_every == 0 or it == total_iters or out_of_time
            wall = clock.wall_s()
            for i, (s, seed) in enumerate(zip(setups, seeds)):
                norms = {k: [float(f"{x:.5g}") for x in np.asarray(v)[i]] for k, v in norms_all.items()}
                record = {"iteration": it, "env_steps": env_steps, "wall_s": wall, **per_seed[i], "norms": norms}
                last_train[i] = per_seed[i]
                if evaluate_now:
                    last_eval[i] = _evaluate_and_save(s, _take(states, i), env_steps, per_seed[i])
                    record["eval"] = last_eval[i]
                for sink in sinks[i]:
                    sink(record)
                if progress_fn is not None:
                    progress_fn({**record, "seed": seed})
            if out_of_time:
                break
    finally:
        for seed_sinks in sinks:
            for sink in seed_sinks:
                if hasattr(sink, "close"):
                    sink.close()

    wall = clock.elapsed_s()
    done_steps = int(states.env_steps[0])
    mean_eval = {k: float(np.mean([e[k] for e in last_eval])) for k in numeric(last_eval[0])
                 if all(k in e for e in last_eval)} if all(last_eval) else {}
    return {
        "run_dir": str(root), "env_steps": done_steps, "iterations": int(states.iteration[0]), "wall_s": wall,
        "compile_s": clock.compile_s,
        "steps_per_s": len(seeds) * (done_steps - start_iter * base.steps_per_iteration) / max(wall, 1e-9),
        "eval": mean_eval, "train": {},
        "seeds": {seed: {"run_dir": str(s.cfg.out), "eval": e, "train": t}
                  for seed, s, e, t in zip(seeds, setups, last_eval, last_train)},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(base.cfg).items()},
    }


def _evaluate_and_save(setup: Setup, state, env_steps: int, metrics: dict) -> dict:
    """One seed's evaluation, training checkpoint and artifact, exactly as the single-seed loop writes them."""
    from deepcrl.evaluate import evaluate
    from deepcrl.policy import JaxPolicy
    from deepcrl.teacher.checkpoint import actor_module

    # as `deepcrl.teacher.train.evaluate_state` (same policy, episodes and seed), without importing train
    policy = JaxPolicy(make_manifest(setup, 0, {}), actor_module(setup, state))
    result = evaluate(setup.env, policy, episodes=setup.cfg.eval_episodes, seed=12345).as_dict()
    run_dir = Path(setup.cfg.out)
    save_train_state(run_dir, state)
    artifacts.save(run_dir, make_manifest(setup, env_steps, {**metrics, **numeric(result)}), artifact_params(state))
    return result
