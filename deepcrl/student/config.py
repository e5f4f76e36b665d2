"""`deepcrl distill`: distil a deep teacher artifact into a shallow student artifact."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from deepcrl import _checks as checks
from deepcrl.errors import DeepcrlError


def parse_hidden(text: str) -> tuple[int, ...]:
    """Parse hidden sizes such as ``"256,256"``; anything else is one `DeepcrlError` sentence."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        sizes = ()
    if not sizes or any(s < 1 for s in sizes):
        raise DeepcrlError(f"--hidden must be comma-separated positive integers such as 256,256; got {text!r}.")
    return sizes


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Distil a deep teacher into a shallow MLP student (action matching, optional representation
    matching, offline or DAgger data); writes a student artifact and report.json."""

    run: Path
    """Teacher run directory (written by `deepcrl train`)."""
    out: Path
    """Student run directory to write (not the teacher's)."""
    hidden: str = "64,64"
    """Student hidden sizes, comma-separated (64,64: ~5k parameters, 50x fewer than a depth-4 width-256
    teacher; benchmarks/distill_bodies.py measures it on reacher)."""
    method: Literal["action", "dagger"] = "dagger"
    """`action`: states from teacher rollouts; `dagger`: roll out the student (mixed with a decaying share of
    teacher actions), label every visited state with the teacher, aggregate and retrain."""
    represent: bool = False
    """Also learn the teacher critic's phi/psi with shallow encoders (MSE + energy-ordering InfoNCE) and match
    the teacher actor's hidden features through a learned projection."""
    loss: Literal["mse", "mean", "kl"] = "mse"
    """Action loss: `mse` of the squashed actions tanh(mean); `mean`: MSE of the pre-tanh means (teacher's
    clipped to +-3, so the gradient does not vanish near +-1); `kl` to the teacher's Gaussian (makes the
    student Gaussian)."""
    normalize: bool = True
    """Standardise the student's inputs with the per-input mean and std of teacher-visited states (stored in
    the student's manifest and exported into its ONNX graph): inputs on very different scales (a body's joint
    velocities beside its fingertip and goal coordinates) reach the first layer on one scale."""
    layer_norm: bool = False
    """LayerNorm after every hidden Dense of the student."""
    distill_steps: int = 6000
    """The student's gradient steps in total (split evenly over the rounds)."""
    batch_size: int = 256
    """Minibatch size."""
    learning_rate: float = 1e-3
    """Adam learning rate (cosine-decayed to 5% over the run)."""
    rounds: int = 4
    """Data-collection rounds; each adds num_envs x unroll_length labelled states (DAgger iterations)."""
    num_envs: int = 64
    """Parallel environments per collection round."""
    unroll_length: int | None = None
    """Steps per environment per round; the env's episode length if None."""
    beta_decay: float = 0.5
    """DAgger: the teacher acts with probability beta_decay**round (round 0 is all teacher)."""
    noise: float = 0.1
    """Std of the Gaussian noise added to the teacher's actions while it drives (wider state coverage)."""
    repr_coef: float = 1.0
    """Weight of the phi/psi MSE (with --represent)."""
    nce_coef: float = 1.0
    """Weight of the energy-ordering InfoNCE (with --represent)."""
    feature_coef: float = 0.1
    """Weight of the actor-feature matching (with --represent)."""
    eval_episodes: int = 256
    """Evaluation episodes for teacher, student and random policy (same seeds for all)."""
    eval_seed: int = 12345
    """Seed of the evaluation starts and goals."""
    round_eval_episodes: int = 64
    """Student evaluation episodes after every round, for the curves (0 = skip)."""
    seed: int = 0
    """Seed of the student's initialisation, data collection and minibatches."""
    json: bool = False
    """Print the report as one JSON object on stdout (progress goes to stderr)."""

    def hidden_sizes(self) -> tuple[int, ...]:
        return parse_hidden(self.hidden)

    def __post_init__(self) -> None:
        """Check every field (one `DeepcrlError` sentence for the first bad one); paths become `Path`s."""
        checks.paths(self, "run", "out")
        self.hidden_sizes()
        checks.positive(self, "distill_steps", "batch_size", "learning_rate", "rounds", "num_envs", "unroll_length",
                        "eval_episodes")
        checks.within(self, 0, 1, "beta_decay")
        checks.at_least(self, 0, "noise", "round_eval_episodes")
        if self.out.absolute() == self.run.absolute():
            raise DeepcrlError("--out must differ from --run: the student would overwrite its teacher.")
