"""`deepcrl train`: train a teacher with a progress display, then print a one-screen summary."""

from __future__ import annotations

from deepcrl.teacher.config import TrainConfig, planned_env_steps

__all__ = ["TrainProgress", "planned_env_steps", "run", "train_with_progress"]


class TrainProgress:
    """Feeds `train`'s records to a progress display: the env steps, the losses and the last evaluation."""

    def __init__(self, display):
        self.display, self.last_eval = display, {}

    def __call__(self, record: dict) -> None:
        self.last_eval.update(record.get("eval", {}))
        self.display.update(record["env_steps"], critic_loss=record["critic_loss"], actor_loss=record["actor_loss"],
                            alpha=record["alpha"], success=self.last_eval.get("success"),
                            detour=self.last_eval.get("detour_success"))


def train_with_progress(cfg: TrainConfig) -> dict:
    """`deepcrl.teacher.train.train` with the CLI's progress display; returns its summary."""
    from deepcrl.cli.progress import Display
    from deepcrl.teacher.train import train

    with Display("train", total=planned_env_steps(cfg), unit="env steps") as display:
        return train(cfg, progress_fn=TrainProgress(display))


def run(cfg: TrainConfig) -> int:
    from rich.console import Console

    from deepcrl.teacher import distributed

    # A multi-process job is joined before anything asks JAX for its devices (planned_env_steps does).
    distributed.join(cfg.coordinator, cfg.num_processes, cfg.process_id, cfg.validate_job().join_timeout_s)
    if not distributed.is_primary():  # the other processes of the job train in step, silently
        from deepcrl.teacher.train import train

        train(cfg)
        return 0
    from deepcrl.cli import json_output, print_json

    with json_output(cfg.json):
        summary = train_with_progress(cfg)
    if cfg.json:
        print_json(summary)
        return 0
    ev = summary.get("eval", {})
    seeds = f"{len(summary['seeds'])} seeds (mean below) x " if "seeds" in summary else ""
    Console().print(
        f"[bold green]trained[/] {seeds}{summary['env_steps']:,} env steps in {summary['wall_s']:.0f} s -> "
        f"{summary['run_dir']}\n"
        f"success {ev.get('success', float('nan')):.3f}, detour success "
        f"{_fmt(ev.get('detour_success'))} ({ev.get('detour_episodes', 0)} detour episodes), "
        f"time at goal {ev.get('time_at_goal', float('nan')):.1f}/{ev.get('episode_length', 0)}",
        highlight=False, soft_wrap=True,
    )
    return 0


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
