"""`deepcrl eval`: score any policy (teacher, student, .onnx, or a running server) in the simulator."""

from __future__ import annotations

import dataclasses
import json
import os


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Roll a deterministic policy for K episodes and report success, time at goal and final distance.

    Give exactly one of --ckpt (a teacher or student run directory), --model (an exported .onnx) or --url (a
    running `deepcrl serve`). The same seed gives the same starts and goals for every kind of policy, so their
    numbers compare directly.
    """

    ckpt: str | None = None
    """Teacher or student run directory."""
    model: str | None = None
    """Exported .onnx file (run through ONNX Runtime)."""
    url: str | None = None
    """Base URL of a running `deepcrl serve` (the simulator is driven through the server)."""
    env: str | None = None
    """Environment id; defaults to the one the policy was trained on."""
    episodes: int = 64
    """Number of evaluation episodes (run in parallel)."""
    seed: int = 0
    """Seed of the episodes' starts and goals."""
    episode_length: int | None = None
    """Steps per episode; the env's default if unset."""
    json: bool = False
    """Print one JSON object instead of a table."""
    render: str | None = None
    """Also write a replay of the first episode: .html for Brax envs, .png for point mazes."""
    token_env: str | None = None
    """With --url: name of the environment variable holding the server's bearer token."""

    def run(self) -> int:
        from deepcrl.errors import DeepcrlError

        given = [name for name in ("ckpt", "model", "url") if getattr(self, name)]
        if len(given) != 1:
            raise DeepcrlError("give exactly one of --ckpt DIR, --model FILE.onnx or --url URL.")
        if self.episodes < 1:
            raise DeepcrlError(f"--episodes must be at least 1, got {self.episodes}.")
        policy, env_id, source = self._policy()
        from deepcrl import envs
        from deepcrl.evaluate import evaluate

        env = envs.make(env_id)
        result = evaluate(env, policy, episodes=self.episodes, seed=self.seed, episode_length=self.episode_length)
        out = {"source": source, "env": env_id, "seed": self.seed, **result.as_dict()}
        if self.render:
            from deepcrl.evaluate import render_episode

            out["render"] = str(render_episode(env, policy, self.render, seed=self.seed,
                                               episode_length=self.episode_length))
        if self.json:
            print(json.dumps(out))
        else:
            _print_table(out)
        return 0

    def _policy(self):
        from deepcrl.errors import DeepcrlError

        if self.ckpt:
            from deepcrl.policy import load_policy

            policy = load_policy(self.ckpt)
            env_id = self.env or policy.manifest.env_id
            return policy, env_id, f"{policy.manifest.kind} {self.ckpt}"
        if self.model:
            from deepcrl.export.runtime import OnnxPolicy

            policy = OnnxPolicy(self.model)
            env_id = self.env or policy.metadata.get("env_id")
            if not env_id:
                raise DeepcrlError(f"{self.model} names no env; pass --env ID.")
            return policy, env_id, f"onnx {self.model}"
        from deepcrl.serve.client import PolicyClient

        token = os.environ.get(self.token_env) if self.token_env else None
        if self.token_env and token is None:
            raise DeepcrlError(f"the environment variable {self.token_env} is not set.")
        policy = PolicyClient(self.url, token=token)
        served = policy.metadata()  # the server's facts; the model's own metadata_props under "metadata"
        env_id = self.env or served.get("metadata", {}).get("env_id")
        if not env_id:
            raise DeepcrlError(f"the server at {self.url} names no env; pass --env ID.")
        return policy, env_id, f"server {self.url}"


def _print_table(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{out['source']} on {out['env']} ({out['episodes']} episodes, seed {out['seed']})")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    table.add_row("success (reached the goal)", pct(out["success"]))
    table.add_row("success at the last step", pct(out["final_success"]))
    table.add_row("time at goal", f"{out['time_at_goal']:.1f} / {out['episode_length']} steps")
    table.add_row("final distance", f"{out['final_distance']:.3f}")
    if out["detour_episodes"]:
        table.add_row(f"detour pairs ({out['detour_episodes']})", pct(out["detour_success"]))
        table.add_row(f"direct pairs ({out['episodes'] - out['detour_episodes']})", pct(out["direct_success"]))
    if out.get("render"):
        table.add_row("replay", out["render"])
    Console().print(table)
