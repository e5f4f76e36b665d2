"""`deepcrl train`: the teacher's training config, its per-env defaults and its checks.

Light on purpose (no JAX import at module level) so `deepcrl --help` stays quick. Every field left as None
takes the default of the env (`ENV_DEFAULTS`), or the GPU defaults of the reference when a GPU is present.
`TrainConfig.resolved()` fills them in and `validate()` checks the result before anything is compiled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from deepcrl import _checks as checks
from deepcrl.errors import DeepcrlError

# Tuned on the shared 2-core CPU machine. On point_maze the learner, not the simulator, is the bottleneck, so
# the ratio is one SGD step per 25 env steps (64 per 64 x 25 unroll), against the reference's one per 40;
# width 128 / depth 4 is the cheapest net that solves the U-maze; alpha starts at 1 and its slow decay (lr
# 3e-4) keeps exploration high for the first ~100k steps, which is what fills the replay with detours.
# Training 3/4 of the actor's batch on random buffer goals (not only its own hindsight goals) halves the env
# steps to 0.9 success (0.92 at 64k instead of 128k). At the 96k-step default, 1000 eval episodes give success
# 0.93 / 0.95 (seeds 0 / 1; detour pairs 0.63 / 0.78) vs 0.90 (detour 0.48) at a fraction of 0.5 and 0.89
# without random goals. Past ~150k steps, once the entropy nears its target, success drifts down again.
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "point_maze": dict(steps=96_000, depth=4, width=128, num_envs=64, batch_size=256, unroll_length=25,
                       sgd_steps=64, replay_capacity=1_000, eval_every=10, actor_random_goal_frac=0.75),
    "point_maze_open": dict(steps=100_000, depth=4, width=128, num_envs=64, batch_size=256, unroll_length=25,
                            sgd_steps=64, replay_capacity=1_000, eval_every=10, actor_random_goal_frac=0.75),
    "point_maze_big": dict(steps=2_000_000, depth=8, width=256, num_envs=128, batch_size=256,
                           unroll_length=25, sgd_steps=64, replay_capacity=2_000, eval_every=20,
                           actor_random_goal_frac=0.75),
    # The reference's shape with a CPU budget: success 1.0 at ~476k env steps (~6 min on an idle 2-core CPU),
    # time at goal 40.7/50 after 1.2M (issue 18); 600k keeps `deepcrl pipeline --env reacher` near 15 minutes.
    "reacher": dict(steps=600_000, depth=4, width=256, num_envs=512, batch_size=256, unroll_length=62,
                    sgd_steps=800, replay_capacity=10_000, eval_every=10, actor_random_goal_frac=0.0),
}
# The reference's shape (Brax envs, and every env on a GPU): 512 envs x unroll 62, batch 256, width 256,
# 800 SGD steps per iteration, replay 10k steps per env.
REFERENCE_DEFAULTS: dict[str, Any] = dict(steps=10_000_000, depth=4, width=256, num_envs=512, batch_size=256,
                                          unroll_length=62, sgd_steps=800, replay_capacity=10_000,
                                          eval_every=10, actor_random_goal_frac=0.0)
_RESOLVED = tuple(REFERENCE_DEFAULTS)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Train a deep contrastive-RL teacher (no reward: goals are future states of the agent's own trajectories)."""

    env: str = "point_maze"
    """Registered env id (`deepcrl envs` lists them)."""
    out: Path = Path("runs/teacher")
    """Run directory: artifact (manifest + checkpoint), metrics.jsonl, curves.png, train_state/ for --resume
    (and TensorBoard event files with --tensorboard)."""
    steps: int | None = None
    """Environment steps to train for (summed over the parallel envs). Default: per env."""
    depth: int | None = None
    """Dense layers in the residual blocks of actor and critic (a multiple of 4, 4..1024). Default: per env."""
    width: int | None = None
    """Hidden width of every layer. Default: per env."""
    critic_depth: int | None = None
    """Critic depth, overriding --depth (e.g. a deep critic with a shallower actor)."""
    actor_depth: int | None = None
    """Actor depth, overriding --depth."""
    num_envs: int | None = None
    """Parallel environments (split over the devices of all processes). Default: per env."""
    batch_size: int | None = None
    """Transitions per SGD step; also the number of contrastive negatives. Default: per env."""
    unroll_length: int | None = None
    """Steps each env takes per training iteration. Default: per env."""
    sgd_steps: int | None = None
    """SGD steps (critic + actor + alpha updates) per training iteration. Default: per env."""
    replay_capacity: int | None = None
    """Replay time steps kept per env (circular). Default: per env."""
    eval_every: int | None = None
    """Evaluate, checkpoint and plot every this many iterations. Default: per env."""
    eval_episodes: int = 256
    """Episodes per evaluation."""
    seed: int = 0
    """Seed of networks, envs and sampling; the same seed gives the same run."""
    seeds: tuple[int, ...] | None = None
    """Train these seeds in one program (vmapped over a seed axis; --seed is then ignored): each seed writes
    OUT/seed_S exactly as `--seed S --out OUT/seed_S` would, for about the cost of one seed where the device is
    latency-bound."""
    resume: bool = False
    """Continue from the training checkpoint in --out (same result as an uninterrupted run)."""
    learning_rate: float = 3e-4
    """Adam learning rate of actor, critic and alpha."""
    discount: float = 0.99
    """Geometric discount of the hindsight goal offsets."""
    logsumexp_coef: float = 0.1
    """Weight of the logsumexp^2 regulariser of the InfoNCE critic loss."""
    target_entropy_scale: float = -0.5
    """Target entropy = this x action size (automatic alpha tuning)."""
    actor_random_goal_frac: float | None = None
    """Fraction of the actor's batch whose goal is another transition's goal (a random buffer state) instead
    of its own hindsight goal: trains the actor on start/goal pairs its own trajectories never joined
    (0 = the reference). Default: per env (0.75 on the point mazes)."""
    repr_size: int = 64
    """Size of the critic's representations phi(s, a) and psi(g)."""
    residual_init: Literal["scaled", "zero", "reference"] = "scaled"
    """Initial scale of each residual block's last LayerNorm. "scaled" (the deep recipe): 1 / (depth / 4), so all
    blocks together start as one block's worth and depth 4 is exactly the reference; "zero": every block starts
    as the identity (slower to start: a block's interior gets no gradient until its scale has moved);
    "reference": 1, where the residual stream grows with depth and a depth-64 actor starts saturated (tanh
    actions at +-1, log-stds at their floor) and never explores."""
    remat: bool = False
    """Recompute each residual block in the backward pass (jax.checkpoint): less memory, more compute."""
    bf16: bool = False
    """Compute in bfloat16 (parameters stay float32); for GPUs."""
    max_minutes: float | None = None
    """Stop after this much wall time (checkpoint, artifact and plots are written as at the end)."""
    tensorboard: bool = False
    """Also write TensorBoard event files (losses every iteration, evaluations) into --out."""
    json: bool = False
    """Print the run's summary as one JSON object on stdout (progress goes to stderr)."""

    # -- multi-process training (jax.distributed); see deepcrl/teacher/distributed.py ----------------------------
    coordinator: str | None = None
    """HOST:PORT of process 0 in a multi-process job (every process passes the same). Leave the three job flags
    unset under SLURM (srun) or Open MPI (mpirun), where JAX reads them from the environment."""
    num_processes: int | None = None
    """Processes in the multi-process job (envs and batch are split over all their devices)."""
    process_id: int | None = None
    """This process's index in the job, 0..num_processes-1; process 0 writes the artifact and reports."""
    join_timeout_s: float = 120.0
    """Seconds to wait for every process of the job to arrive before giving up with an error."""

    # -- defaults and checks ----------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        """Check every field that is set (one `DeepcrlError` sentence for the first bad one), as tyro builds the
        config; `validate` checks what depends on the env's defaults and the devices once they are known."""
        for name in ("depth", "critic_depth", "actor_depth"):
            d = getattr(self, name)
            if d is not None and (d % 4 or not 4 <= d <= 1024):
                raise DeepcrlError(f"{name.replace('_', ' ')} must be a multiple of 4 between 4 and 1024, "
                                   f"got {d}.")
        checks.positive(self, "steps", "width", "num_envs", "batch_size", "unroll_length", "sgd_steps",
                        "replay_capacity", "eval_every", "eval_episodes", "repr_size", "learning_rate",
                        "max_minutes")
        if not 0.0 < self.discount < 1.0:
            raise DeepcrlError(f"--discount must lie in (0, 1), got {self.discount}.")
        checks.within(self, 0, 1, "actor_random_goal_frac")
        self.validate_job()

    def resolved(self, on_gpu: bool | None = None) -> "TrainConfig":
        """A copy with every None field set to the env's default (GPU: the reference's shape)."""
        from deepcrl import envs

        envs.check_env_id(self.env)
        if on_gpu is None:
            from deepcrl._gpu import has_gpu

            on_gpu = has_gpu()
        base = REFERENCE_DEFAULTS if on_gpu or self.env not in ENV_DEFAULTS else ENV_DEFAULTS[self.env]
        updates = {k: base[k] for k in _RESOLVED if getattr(self, k) is None}
        cfg = dataclasses.replace(self, out=Path(self.out), **updates)
        return dataclasses.replace(cfg, critic_depth=cfg.critic_depth or cfg.depth,
                                   actor_depth=cfg.actor_depth or cfg.depth)

    def validate(self, device_count: int = 1) -> "TrainConfig":
        """Check a resolved config against its env's defaults and the devices (every field alone was checked
        by `__post_init__`); raise `DeepcrlError` (one sentence) on the first problem."""
        unset = [name for name in (*_RESOLVED, "critic_depth", "actor_depth") if getattr(self, name) is None]
        if unset:
            raise DeepcrlError(f"--{unset[0].replace('_', '-')} is unset; validate a resolved() config.")
        if self.unroll_length < 2:
            raise DeepcrlError("--unroll-length must be at least 2 so every unroll holds a future state.")
        if self.unroll_length > self.replay_capacity:
            raise DeepcrlError(f"--unroll-length {self.unroll_length} exceeds --replay-capacity "
                               f"{self.replay_capacity}; the buffer must hold a whole unroll.")
        buffer = self.num_envs * self.replay_capacity
        if self.batch_size > buffer:
            raise DeepcrlError(f"--batch-size {self.batch_size} is larger than the replay buffer ({self.num_envs} "
                               f"envs x {self.replay_capacity} steps = {buffer} transitions).")
        if self.num_envs % device_count or self.batch_size % device_count:
            raise DeepcrlError(f"--num-envs ({self.num_envs}) and --batch-size ({self.batch_size}) must be "
                               f"multiples of the {device_count} devices for data parallelism.")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)
                                       or min(self.seeds) < 0):
            raise DeepcrlError(f"--seeds must be distinct non-negative integers, got {list(self.seeds)}.")
        return self

    def validate_job(self) -> "TrainConfig":
        """Check the multi-process job flags (before joining the job); raise `DeepcrlError` on a problem."""
        flags = (self.coordinator, self.num_processes, self.process_id)
        if any(f is not None for f in flags):
            if any(f is None for f in flags):
                raise DeepcrlError("--coordinator, --num-processes and --process-id go together (or none of them, "
                                   "under SLURM or Open MPI where JAX reads the job from the environment).")
            host, _, port = self.coordinator.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise DeepcrlError(f"--coordinator must be HOST:PORT (e.g. 10.0.0.1:1234), got {self.coordinator!r}.")
            if self.num_processes < 1 or not 0 <= self.process_id < self.num_processes:
                raise DeepcrlError(f"--process-id must lie in 0..{self.num_processes - 1} for --num-processes "
                                   f"{self.num_processes}, got {self.process_id}.")
        if not self.join_timeout_s > 0:
            raise DeepcrlError(f"--join-timeout-s must be positive, got {self.join_timeout_s}.")
        return self


def planned_env_steps(cfg: TrainConfig) -> int:
    """Env steps a run ends at: --steps rounded up to whole iterations (num envs x unroll length)."""
    import math

    c = cfg.resolved().validate()  # one-sentence errors before any arithmetic on bad values
    per_iteration = c.num_envs * c.unroll_length
    return max(1, math.ceil(c.steps / per_iteration)) * per_iteration
