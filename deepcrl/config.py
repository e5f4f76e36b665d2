"""Configs of the verbs that span stages: `deepcrl eval` and `deepcrl pipeline` (plain data, no JAX import)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from deepcrl import _checks as checks
from deepcrl.bench.config import BenchServeConfig
from deepcrl.errors import DeepcrlError
from deepcrl.student.config import DistillConfig, parse_hidden


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Roll a deterministic policy for K episodes and report success, time at goal and final distance.

    Give exactly one of --run (a teacher or student run directory), --model (an exported .onnx) or --url (a
    running `deepcrl serve`). The same seed gives the same starts and goals for every kind of policy, so their
    numbers compare directly.
    """

    run: Path | None = None
    """Teacher or student run directory."""
    model: Path | None = None
    """Exported .onnx file (run through ONNX Runtime)."""
    url: str | None = None
    """Base URL of a running `deepcrl serve` (the simulator is driven through the server)."""
    env: str | None = None
    """Environment id; defaults to the one the policy was trained on."""
    eval_episodes: int = 64
    """Number of evaluation episodes (run in parallel)."""
    seed: int = 0
    """Seed of the episodes' starts and goals."""
    episode_length: int | None = None
    """Steps per episode; the env's default if unset."""
    json: bool = False
    """Print one JSON object instead of a table."""
    render: Path | None = None
    """Also draw the first episode: .mp4 or .gif for MJX bodies (MuJoCo's renderer, offscreen via EGL), .html
    (a replay viewer) for Brax envs, .png for mazes."""
    token_env: str | None = None
    """With --url: name of the environment variable holding the server's bearer token."""
    protocol: Literal["v1", "v2"] = "v1"
    """With --url: v1 (deepcrl's own) or v2 (the Open Inference Protocol of Triton, KServe, MLServer, deepcrl)."""
    model_name: str | None = None
    """With --url: the served model to score (required by v2; v1 uses the server's default model if unset)."""
    tls_ca: Path | None = None
    """With an https:// --url: the PEM CA bundle that signed the server's certificate (a self-signed server's own
    certificate or CA; unset: the system's trusted CAs)."""
    tls_client_cert: Path | None = None
    """With an https:// --url: a PEM client certificate, for a server started with --tls-client-ca."""
    tls_client_key: Path | None = None
    """With --tls-client-cert: its PEM private key (unset: the key is in the certificate's file)."""
    probe: bool = False
    """With --run of a teacher trained on a point maze: also score its critic's energy -||phi(s, a) - psi(g)||
    against the maze's shortest-path and straight-line distances over every pair of free cells (Spearman rank
    correlation: does the critic follow the walls?) and draw the energy over the maze for one goal."""
    probe_png: Path | None = None
    """With --probe: where to draw the heatmap (default: probe.png in the --run directory)."""
    probe_action: Literal["actor", "zero"] = "actor"
    """With --probe: the action in phi(s, a): the actor's deterministic action for (s, g), or zero."""
    plan: bool = False
    """Pursue waypoints planned over the critic's learned distances (landmark graph + shortest paths) instead
    of the goal itself; the critic is --plan-critic, else the --run teacher's."""
    plan_critic: Path | None = None
    """With --plan: a teacher run directory or an exported critic .onnx (`deepcrl export --part critic`)."""
    plan_landmarks: int = 500
    """With --plan: landmark states drawn from the env's coverage (its reset states)."""
    plan_cutoff: float | None = None
    """With --plan: longest graph edge in learned distance ||phi - psi||; unset: --plan-cutoff-quantile of the
    landmark pairs' distances."""
    plan_cutoff_quantile: float = 0.07
    """With --plan and no --plan-cutoff: the quantile of landmark pair distances used as the cutoff."""
    plan_patience: int = 10
    """With --plan: steps an episode may pursue one landmark before it stops choosing it (a learned distance
    can be short across a wall the policy cannot pass); 0: never give up on a landmark."""
    plan_give_up: int = 8
    """With --plan: landmarks an episode may run out of patience on before it stops planning and pursues its goal
    directly (the graph is wrong around it: learned edges across a wall); 0: never stop planning."""

    def __post_init__(self) -> None:
        """Check the fields (one `DeepcrlError` sentence for the first bad one); paths become `Path`s."""
        checks.paths(self, "run", "model", "render", "probe_png", "tls_ca", "tls_client_cert", "tls_client_key")
        if sum(source is not None for source in (self.run, self.model, self.url)) != 1:
            raise DeepcrlError("give exactly one of --run DIR, --model FILE.onnx or --url URL.")
        if self.url is None and (self.protocol != "v1" or self.model_name is not None):
            raise DeepcrlError("--protocol and --model-name choose how to talk to a server; they need --url URL.")
        tls = (self.tls_ca, self.tls_client_cert, self.tls_client_key)
        if any(x is not None for x in tls) and not (self.url or "").startswith("https://"):
            raise DeepcrlError("--tls-ca, --tls-client-cert and --tls-client-key are for an https:// --url.")
        if self.tls_client_key is not None and self.tls_client_cert is None:
            raise DeepcrlError("--tls-client-key needs its --tls-client-cert.")
        if self.protocol == "v2" and not self.model_name:
            raise DeepcrlError("--protocol v2 addresses a model by name; pass --model-name NAME.")
        checks.at_least(self, 1, "eval_episodes", "episode_length")
        if self.plan and self.plan_critic is None and self.run is None:
            raise DeepcrlError("--plan needs a critic: --run DIR of a teacher, or --plan-critic DIR|FILE.onnx.")
        if self.plan_landmarks < 1:
            raise DeepcrlError(f"--plan-landmarks must be at least 1 (an empty landmark set), got {self.plan_landmarks}.")
        if self.plan_patience < 0:
            raise DeepcrlError(f"--plan-patience must be 0 or more, got {self.plan_patience}.")
        if self.plan_give_up < 0 or (self.plan_give_up and not self.plan_patience):
            raise DeepcrlError(f"--plan-give-up must be 0 or more and needs --plan-patience above 0 (it counts "
                               f"landmarks whose patience ran out), got {self.plan_give_up}.")
        if self.plan_critic is not None:
            object.__setattr__(self, "plan_critic", Path(self.plan_critic))
        if self.probe and self.run is None:
            raise DeepcrlError("--probe needs --run DIR: the probe reads a teacher's critic from its run directory.")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Run every stage in a row with the verbs' defaults and end with a one-screen summary.

    Writes OUT/teacher (artifact, curves.png), OUT/student (artifact, report.json, curves.png),
    OUT/policy.onnx, OUT/serve_latency.{json,png} and OUT/summary.json (which also holds `eval --url` through a
    served copy of the ONNX file, on the same episodes as `eval --model`). Re-running with --resume continues
    the teacher from its checkpoint.
    """

    env: str = "point_maze"
    """Environment id (`deepcrl envs`)."""
    out: Path = Path("runs/pipeline")
    """Directory for every stage's output."""
    seed: int = 0
    """Seed of every stage."""
    steps: int | None = None
    """Teacher environment steps; the env's default if unset."""
    depth: int | None = None
    """Teacher depth (multiple of 4); the env's default if unset."""
    teacher_max_minutes: float | None = None
    """Stop teacher training after this much wall time (the run's artifact is still written)."""
    resume: bool = False
    """Continue the teacher from OUT/teacher's training checkpoint."""
    hidden: str = DistillConfig.hidden
    """Student hidden sizes (`deepcrl distill`'s default)."""
    method: Literal["action", "dagger"] = DistillConfig.method
    """Student data: teacher rollouts (action) or DAgger on the student's own states (`deepcrl distill`'s
    default)."""
    distill_steps: int = DistillConfig.distill_steps
    """Student gradient steps (`deepcrl distill`'s default)."""
    bench_duration_s: float = BenchServeConfig.duration_s
    """Seconds per serve-benchmark cell, as `deepcrl bench serve --duration-s` (0 skips the serve benchmark)."""
    eval_episodes: int = DistillConfig.eval_episodes
    """Episodes of the final evaluations (`deepcrl distill`'s default)."""
    json: bool = False
    """Print the summary as one JSON object on stdout (progress goes to stderr)."""

    def __post_init__(self) -> None:
        """Check the fields (one `DeepcrlError` sentence for the first bad one); `out` becomes a `Path`.

        The env id is checked by `run_pipeline` before any work (the registry imports Brax; a config does not).
        """
        checks.paths(self, "out")
        parse_hidden(self.hidden)
        checks.positive(self, "steps", "depth", "teacher_max_minutes", "distill_steps", "eval_episodes")
        checks.at_least(self, 0, "bench_duration_s")
