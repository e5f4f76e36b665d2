"""`deepcrl train`: train a teacher with a progress display, then print a one-screen summary."""

from __future__ import annotations

from deepcrl.teacher.config import TrainConfig


def run(cfg: TrainConfig) -> int:
    from rich.console import Console

    from deepcrl.teacher.train import train

    summary = train(cfg, progress=True)
    ev = summary.get("eval", {})
    Console().print(
        f"[bold green]trained[/] {summary['env_steps']:,} env steps in {summary['wall_s']:.0f} s -> "
        f"{summary['run_dir']}\n"
        f"success {ev.get('success', float('nan')):.3f}, detour success "
        f"{_fmt(ev.get('detour_success'))} ({ev.get('detour_episodes', 0)} detour episodes), "
        f"time at goal {ev.get('time_at_goal', float('nan')):.1f}/{ev.get('episode_length', 0)}",
        highlight=False,
    )
    return 0


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
