"""Training loop of the contrastive RL teacher.

One training iteration is one jitted, pure function (`make_iteration`): every env takes ``unroll_length``
steps with the stochastic actor, the unroll goes into the trajectory replay, then ``sgd_steps`` SGD steps run
in a `lax.scan`, each drawing a batch with hindsight goals and updating critic, actor and alpha with their
own Adam optimiser. Everything the run needs to continue (parameters, optimiser states, replay, env states,
PRNG key) lives in one `TrainState` pytree, so a checkpoint of it resumes bit for bit.

The host loop (`train`) only logs, evaluates, plots and saves. With several local devices the envs, the
replay (env axis) and each batch are sharded over a 1-D mesh and parameters are replicated; XLA inserts the
collectives, so the same code runs on one CPU or many GPUs.

    >>> from deepcrl.teacher.config import TrainConfig
    >>> summary = train(TrainConfig(env="point_maze", out="runs/t"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from deepcrl import artifacts, envs
from deepcrl.envs.wrappers import wrap_for_training
from deepcrl.errors import DeepcrlError
from deepcrl.teacher import losses, networks, replay
from deepcrl.teacher.config import TrainConfig

TRAIN_STATE_DIR = "train_state"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


class Transition(NamedTuple):
    """One env step of every env (leading axis N; an unroll stacks T of them)."""

    obs: jax.Array
    """State part of the observation before acting."""
    action: jax.Array
    """Action taken (in [-1, 1])."""
    episode_id: jax.Array
    """Episode counter of the env when acting."""
    success: jax.Array
    """1.0 when the step ended within the success radius of the env's goal."""


class TrainState(NamedTuple):
    """Everything a run needs to continue: a checkpoint of this resumes bit for bit."""

    actor: nnx.State
    critic: nnx.State
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState
    replay: replay.ReplayState
    env_state: Any
    rng: jax.Array
    iteration: jax.Array
    env_steps: jax.Array


@dataclasses.dataclass(frozen=True)
class Setup:
    """The static side of a run: env, network definitions, optimisers, mesh."""

    cfg: TrainConfig
    env: Any
    train_env: Any
    spec: Any
    actor_cfg: dict
    critic_cfg: dict
    actor_def: nnx.GraphDef
    critic_def: nnx.GraphDef
    actor_rest: nnx.State
    critic_rest: nnx.State
    optimizer: optax.GradientTransformation
    """Adam's moment scaling; the (traced) learning rate is applied in the step, so changing it on resume
    does not recompile."""
    mesh: Mesh

    @property
    def steps_per_iteration(self) -> int:
        return self.cfg.num_envs * self.cfg.unroll_length


# ---- setup -------------------------------------------------------------------------------------------------


def network_configs(cfg: TrainConfig, env) -> tuple[dict, dict]:
    """Actor and critic builder configs (with sizes), as written into the artifact's manifest."""
    sizes = {"obs_size": env.goal_spec.obs_size, "goal_size": env.goal_spec.goal_size,
             "action_size": env.action_size}
    extra = {"remat": cfg.remat, "dtype": "bfloat16" if cfg.bf16 else "float32"}
    actor = {**sizes, "depth": cfg.actor_depth, "width": cfg.width, **extra}
    critic = {**sizes, "depth": cfg.critic_depth, "width": cfg.width, "repr_size": cfg.repr_size, **extra}
    return actor, critic


# Runs whose configs differ only in bookkeeping (out, steps, resume, eval) share a setup and therefore the
# compiled iteration: a resumed or repeated run in the same process does not compile again.
_SETUPS: dict[tuple, tuple[Setup, Callable]] = {}
_BOOKKEEPING = dict(out=Path("."), steps=1, resume=False, eval_every=1, eval_episodes=1, max_minutes=None,
                    learning_rate=1.0)


def make_setup(cfg: TrainConfig, devices: list | None = None) -> Setup:
    """Resolve and check the config, build the env and network definitions. Nothing is compiled here."""
    devices = list(devices or jax.local_devices())
    cfg = cfg.resolved(on_gpu=any(d.platform == "gpu" for d in devices)).validate(len(devices))
    key = (dataclasses.replace(cfg, **_BOOKKEEPING), tuple(d.id for d in devices))
    if key in _SETUPS:
        return dataclasses.replace(_SETUPS[key][0], cfg=cfg)
    env = envs.make(cfg.env)
    actor_cfg, critic_cfg = network_configs(cfg, env)
    actor_def, _, actor_rest = nnx.split(networks.actor_from_config(actor_cfg, 0), nnx.Param, ...)
    critic_def, _, critic_rest = nnx.split(networks.critic_from_config(critic_cfg, 0), nnx.Param, ...)
    setup = Setup(
        cfg=cfg, env=env, train_env=wrap_for_training(env), spec=env.goal_spec, actor_cfg=actor_cfg,
        critic_cfg=critic_cfg, actor_def=actor_def, critic_def=critic_def, actor_rest=actor_rest,
        critic_rest=critic_rest, optimizer=optax.scale_by_adam(),
        mesh=Mesh(np.array(devices), ("data",)),
    )
    _SETUPS[key] = (setup, make_iteration(setup))
    return setup


def compiled_iteration(setup: Setup) -> Callable[[TrainState, jax.Array], tuple[TrainState, dict]]:
    """The (cached) jitted iteration of a setup made by `make_setup`."""
    key = (dataclasses.replace(setup.cfg, **_BOOKKEEPING), tuple(d.id for d in setup.mesh.devices.flat))
    return _SETUPS[key][1]


def init_state(setup: Setup) -> TrainState:
    """A fresh train state for the config's seed (sharded over the setup's mesh)."""
    cfg = setup.cfg
    key = jax.random.PRNGKey(cfg.seed)
    k_actor, k_critic, k_env, key = jax.random.split(key, 4)
    seed_of = lambda k: int(jax.random.randint(k, (), 0, 2**31 - 1))  # noqa: E731
    actor = nnx.state(networks.actor_from_config(setup.actor_cfg, seed_of(k_actor)), nnx.Param)
    critic = nnx.state(networks.critic_from_config(setup.critic_cfg, seed_of(k_critic)), nnx.Param)
    log_alpha = jnp.zeros((), jnp.float32)
    env_state = jax.jit(setup.train_env.reset)(jax.random.split(k_env, cfg.num_envs))
    state = TrainState(
        actor=actor, critic=critic, log_alpha=log_alpha,
        actor_opt=setup.optimizer.init(actor), critic_opt=setup.optimizer.init(critic),
        alpha_opt=setup.optimizer.init(log_alpha),
        replay=replay.init(cfg.replay_capacity, cfg.num_envs, setup.spec.obs_size, setup.env.action_size),
        env_state=env_state, rng=key, iteration=jnp.zeros((), jnp.int32), env_steps=jnp.zeros((), jnp.int32),
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
        actor=jax.tree.map(lambda _: rep, state.actor), critic=jax.tree.map(lambda _: rep, state.critic),
        log_alpha=rep, actor_opt=jax.tree.map(lambda _: rep, state.actor_opt),
        critic_opt=jax.tree.map(lambda _: rep, state.critic_opt),
        alpha_opt=jax.tree.map(lambda _: rep, state.alpha_opt),
        replay=replay.ReplayState(obs=by_env_time_major, action=by_env_time_major,
                                  episode_id=by_env_time_major, inserted=rep) if buf is not None else None,
        env_state=jax.tree.map(env_leaf, state.env_state), rng=rep, iteration=rep, env_steps=rep,
    )


# ---- one training iteration ----------------------------------------------------------------------------------


def make_iteration(setup: Setup) -> Callable[[TrainState, jax.Array], tuple[TrainState, dict]]:
    """The jitted ``iteration(state, learning_rate) -> (state, metrics)``: collect an unroll, then K SGD steps.

    The three optimisers are Adam: optax's Adam scaling followed by ``-learning_rate``.
    """
    cfg, spec = setup.cfg, setup.spec
    env = setup.train_env
    target_entropy = cfg.target_entropy_scale * setup.env.action_size
    batch_sharding = NamedSharding(setup.mesh, P("data"))

    def actor_of(params):
        return nnx.merge(setup.actor_def, params, setup.actor_rest)

    def critic_of(params):
        return nnx.merge(setup.critic_def, params, setup.critic_rest)

    # -- collect -------------------------------------------------------------------------------------------
    def env_step(carry, key):
        params, env_state = carry
        s, g = envs.split_obs(spec, env_state.obs)
        mean, log_std = actor_of(params)(jnp.concatenate([s, g], axis=-1))
        action, _ = losses.sample_tanh_gaussian(mean, log_std, key)
        next_state = env.step(env_state, action)
        tr = Transition(obs=s, action=action, episode_id=env_state.info["episode_id"],
                        success=next_state.metrics["success"])
        return (params, next_state), tr

    # -- update --------------------------------------------------------------------------------------------
    def adam(grads, opt_state, params, lr):
        updates, opt_state = setup.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, jax.tree.map(lambda u: -lr * u, updates)), opt_state

    def sgd_step(carry, key):
        lr, actor, critic, log_alpha, actor_opt, critic_opt, alpha_opt, buf, index = carry
        k_sample, k_actor = jax.random.split(key)
        k_goal = jax.random.fold_in(key, 1)
        batch = replay.sample(buf, index, k_sample, cfg.batch_size, spec.goal_indices, cfg.discount)
        s, a, g = (jax.lax.with_sharding_constraint(x, batch_sharding) for x in (batch.obs, batch.action, batch.goal))

        def critic_loss_fn(params):
            net = critic_of(params)
            return losses.critic_loss(net.phi(s, a), net.psi(g), cfg.logsumexp_coef)

        (c_loss, c_metrics), c_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(critic)
        alpha = jnp.exp(log_alpha)

        # Another row's goal is a random buffer state: pairs that no single trajectory joined.
        mixed = jax.random.uniform(k_goal, (cfg.batch_size, 1)) < cfg.actor_random_goal_frac
        g_actor = jnp.where(mixed, jnp.roll(g, 1, axis=0), g)

        def actor_loss_fn(params):
            mean, log_std = actor_of(params)(jnp.concatenate([s, g_actor], axis=-1))
            action, log_prob = losses.sample_tanh_gaussian(mean, log_std, k_actor)
            energy = critic_of(critic).energy(s, action, g_actor)
            return losses.actor_loss(alpha, log_prob, energy), (log_prob, energy)

        (a_loss, (log_prob, energy)), a_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(actor)
        al_loss, al_grad = jax.value_and_grad(losses.alpha_loss)(log_alpha, log_prob, target_entropy)

        critic, critic_opt = adam(c_grads, critic_opt, critic, lr)
        actor, actor_opt = adam(a_grads, actor_opt, actor, lr)
        log_alpha, alpha_opt = adam(al_grad, alpha_opt, log_alpha, lr)
        metrics = {"critic_loss": c_loss, "actor_loss": a_loss, "alpha_loss": al_loss, "alpha": alpha,
                   "entropy": -jnp.mean(log_prob), "energy": jnp.mean(energy),
                   "critic_accuracy": c_metrics["accuracy"], "logsumexp": c_metrics["logsumexp"],
                   "goal_offset": jnp.mean(batch.offset.astype(jnp.float32))}
        return (lr, actor, critic, log_alpha, actor_opt, critic_opt, alpha_opt, buf, index), metrics

    def iteration(state: TrainState, learning_rate: jax.Array) -> tuple[TrainState, dict]:
        rng, k_collect, k_sgd = jax.random.split(state.rng, 3)
        (_, env_state), unroll = jax.lax.scan(env_step, (state.actor, state.env_state),
                                              jax.random.split(k_collect, cfg.unroll_length))
        buf = replay.insert(state.replay, unroll.obs, unroll.action, unroll.episode_id)
        index = replay.prepare(buf)
        carry = (learning_rate, state.actor, state.critic, state.log_alpha, state.actor_opt, state.critic_opt, state.alpha_opt,
                 buf, index)
        carry, metrics = jax.lax.scan(sgd_step, carry, jax.random.split(k_sgd, cfg.sgd_steps))
        _, actor, critic, log_alpha, actor_opt, critic_opt, alpha_opt, buf, _ = carry
        metrics = jax.tree.map(jnp.mean, metrics)
        metrics["train_success"] = jnp.mean(unroll.success)
        new = TrainState(actor=actor, critic=critic, log_alpha=log_alpha, actor_opt=actor_opt,
                         critic_opt=critic_opt, alpha_opt=alpha_opt, replay=buf, env_state=env_state, rng=rng,
                         iteration=state.iteration + 1,
                         env_steps=state.env_steps + cfg.num_envs * cfg.unroll_length)
        return new, metrics

    return jax.jit(iteration, donate_argnums=0)


# ---- checkpoints -----------------------------------------------------------------------------------------------


def save_train_state(run_dir: Path, state: TrainState) -> None:
    """Write the whole train state as an Orbax checkpoint; the previous one is replaced only once complete."""
    leaves = jax.device_get(jax.tree.leaves(state))
    tree = {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    artifacts.write_checkpoint_swapped(run_dir / TRAIN_STATE_DIR, tree)


def load_train_state(run_dir: Path, like: TrainState, shardings) -> TrainState:
    """Restore a train state saved by `save_train_state` into the structure (and shardings) of `like`."""
    import orbax.checkpoint as ocp

    path = (run_dir / TRAIN_STATE_DIR).absolute()
    if not path.is_dir():
        raise DeepcrlError(f"cannot resume: {run_dir} holds no training checkpoint ({TRAIN_STATE_DIR}/).")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            tree = ckptr.restore(path)
    except Exception as exc:  # orbax raises many types; the user needs one sentence
        raise DeepcrlError(f"cannot resume: the training checkpoint in {run_dir} is corrupt "
                           f"({type(exc).__name__}).") from None
    leaves, treedef = jax.tree.flatten(like)
    got = [tree[k] for k in sorted(tree)]
    if len(got) != len(leaves) or any(np.shape(a) != np.shape(b) for a, b in zip(got, leaves)):
        raise DeepcrlError(f"cannot resume: the training checkpoint in {run_dir} was written for another env, "
                           "network or replay shape; use the same settings or a new --out.")
    restored = jax.tree.unflatten(treedef, [np.asarray(a, dtype=np.asarray(b).dtype) for a, b in zip(got, leaves)])
    return jax.device_put(restored, shardings)


def artifact_params(state: TrainState) -> dict:
    """The artifact's checkpoint pytree: nnx pure dicts of actor and critic parameters."""
    return {"actor": nnx.to_pure_dict(jax.device_get(state.actor)),
            "critic": nnx.to_pure_dict(jax.device_get(state.critic))}


def make_manifest(setup: Setup, env_steps: int, metrics: dict) -> artifacts.Manifest:
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
    return nnx.merge(setup.actor_def, jax.device_get(state.actor), setup.actor_rest)


# ---- host loop -----------------------------------------------------------------------------------------------


def evaluate_state(setup: Setup, state: TrainState, episodes: int, seed: int = 12345) -> dict:
    """Deterministic-policy evaluation of the current actor with `deepcrl.evaluate.evaluate`."""
    from deepcrl.evaluate import evaluate
    from deepcrl.policy import JaxPolicy

    manifest = make_manifest(setup, 0, {})
    result = evaluate(setup.env, JaxPolicy(manifest, actor_module(setup, state)), episodes=episodes, seed=seed)
    return result.as_dict()


def _finite(metrics: dict) -> str | None:
    for name, value in metrics.items():
        if not np.isfinite(value):
            return name
    return None


def _read_metrics(path: Path, up_to_steps: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("env_steps", 0) <= up_to_steps]


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Train a teacher; write the artifact, metrics.jsonl, curves.png and a resumable training checkpoint.

    Args:
        cfg: the training config (None fields take the env's defaults).
        progress: show a rich progress bar.
    Returns:
        Summary: ``run_dir``, ``env_steps``, ``iterations``, ``wall_s``, ``steps_per_s``, ``eval`` (the last
        evaluation: success, detour_success, ...), ``train`` (the last iteration's losses) and ``config``.

    Raises:
        DeepcrlError: bad config (before anything is compiled), a non-finite loss (the last good checkpoint is
            kept), or a checkpoint that cannot be resumed.
    """
    from deepcrl.teacher.plots import plot_curves

    setup = make_setup(cfg)
    cfg = setup.cfg
    run_dir = Path(cfg.out).absolute()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepcrlError(f"cannot create the run directory {run_dir}: {exc.strerror}.") from None
    metrics_path = run_dir / METRICS_FILE
    total_iters = max(1, math.ceil(cfg.steps / setup.steps_per_iteration))

    state = init_state(setup)
    history: list[dict] = []
    if cfg.resume:
        state = load_train_state(run_dir, state, state_shardings(setup, state))
        history = _read_metrics(metrics_path, int(state.env_steps))
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))
    iteration = compiled_iteration(setup)
    lr = jnp.asarray(cfg.learning_rate, jnp.float32)

    start_iter = int(state.iteration)
    last_eval: dict = next((r["eval"] for r in reversed(history) if "eval" in r), {})
    last_train: dict = {}
    t0 = time.perf_counter() - (history[-1]["wall_s"] if history else 0.0)  # wall time continues on resume
    t_start = time.perf_counter()
    compile_s = None
    ckpt_steps = int(state.env_steps) if cfg.resume else None
    bar = _Progress(progress, total=total_iters * setup.steps_per_iteration, done=int(state.env_steps))
    with bar:
        it = start_iter
        while it < total_iters:
            t_it = time.perf_counter()
            prev_steps = int(state.env_steps)
            new_state, metrics = iteration(state, lr)
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if compile_s is None:
                compile_s = time.perf_counter() - t_it
            bad = _finite(metrics)
            if bad is not None:
                kept = (f"the last good checkpoint (env step {ckpt_steps:,}) is kept in {run_dir}"
                        if ckpt_steps is not None else "no checkpoint was written yet")
                raise DeepcrlError(f"training stopped at env step {prev_steps + setup.steps_per_iteration:,}:"
                                   f" the {bad.replace('_', ' ')} became non-finite ({metrics[bad]}); {kept}; "
                                   "try a lower --learning-rate.")
            state = new_state
            it += 1
            env_steps = int(state.env_steps)
            wall = time.perf_counter() - t0
            out_of_time = cfg.max_minutes is not None and time.perf_counter() - t_start > cfg.max_minutes * 60
            record = {"iteration": it, "env_steps": env_steps, "wall_s": round(wall, 3), **metrics}
            last_train = metrics
            if it % cfg.eval_every == 0 or it == total_iters or out_of_time:
                last_eval = evaluate_state(setup, state, cfg.eval_episodes)
                record["eval"] = last_eval
                save_train_state(run_dir, state)
                artifacts.save(run_dir, make_manifest(setup, env_steps, {**metrics, **_numeric(last_eval)}),
                               artifact_params(state))
                ckpt_steps = env_steps
            history.append(record)
            with open(metrics_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            if "eval" in record:
                plot_curves(history, run_dir / CURVES_FILE, title=f"{cfg.env}: depth {cfg.critic_depth}")
            bar.update(env_steps, time.perf_counter() - t_start, metrics, last_eval)
            if out_of_time:
                break

    wall = time.perf_counter() - t_start
    done_steps = int(state.env_steps)
    return {
        "run_dir": str(run_dir), "env_steps": done_steps, "iterations": int(state.iteration),
        "wall_s": wall, "compile_s": compile_s,
        "steps_per_s": (done_steps - start_iter * setup.steps_per_iteration) / max(wall, 1e-9),
        "eval": last_eval, "train": last_train,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
    }


def _numeric(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class _Progress:
    """A rich progress bar over env steps (or nothing when disabled)."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.enabled = enabled
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.description}"))
            self.task = self.progress.add_task("compiling...", total=total, completed=done)
            self._start = done

    def __enter__(self):
        if self.enabled:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.__exit__(*exc)

    def update(self, env_steps: int, wall: float, metrics: dict, ev: dict) -> None:
        if not self.enabled:
            return
        sps = (env_steps - self._start) / max(wall, 1e-9)
        det = ev.get("detour_success")
        desc = (f"{sps:,.0f} steps/s | critic {metrics['critic_loss']:.3f} actor {metrics['actor_loss']:.3f} "
                f"alpha {metrics['alpha']:.3f} | success {ev.get('success', float('nan')):.2f} "
                f"detour {'n/a' if det is None else f'{det:.2f}'}")
        self.progress.update(self.task, completed=env_steps, description=desc)
