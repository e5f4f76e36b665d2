"""`deepcrl distill`: distil a teacher into a student and print the teacher-vs-student comparison."""

from __future__ import annotations

from deepcrl.student.config import DistillConfig


def show_distill(display, record: dict, rounds: int) -> None:
    """One of `distill`'s records on a progress display: the step, the round, the loss and the held-out error."""
    display.update(record["step"], round=f"{record['round'] + 1}/{rounds}", loss=record["loss"],
                   heldout_mse=record["heldout_action_mse"])


def distill_with_progress(cfg: DistillConfig) -> dict:
    """`deepcrl.student.distill.distill` with the CLI's progress display; returns its report."""
    from deepcrl.cli.progress import Display
    from deepcrl.student.distill import distill

    with Display("distill", total=cfg.distill_steps) as display:
        return distill(cfg, progress_fn=lambda record: show_distill(display, record, cfg.rounds))


def _share(value: float | None) -> str:
    """A kept share as a percentage; n/a where the teacher had nothing to keep (success 0)."""
    return "n/a" if value is None else f"{value:.2%}"


def run(cfg: DistillConfig) -> int:
    from deepcrl.cli import console, json_output, print_json

    with json_output(cfg.json):
        report = distill_with_progress(cfg)
    if cfg.json:
        print_json(report)
        return 0
    t, s, r = report["teacher"], report["student"], report["ratios"]
    console().print(
        f"student -> {report['out']}\n"
        f"  success        teacher {t['eval']['success']:.3f}  student {s['eval']['success']:.3f}  "
        f"random {report['random']['eval']['success']:.3f}  (retained {_share(r['success_retained'])})\n"
        f"  time at goal   teacher {t['eval']['time_at_goal']:.1f}  student {s['eval']['time_at_goal']:.1f}\n"
        f"  parameters     teacher {t['params']:,}  student {s['params']:,}  ({r['params']:.1f}x fewer)\n"
        f"  latency (JAX)  teacher {t['latency_us']:.0f} us  student {s['latency_us']:.0f} us  "
        f"({r['latency']:.1f}x faster)",
        highlight=False,
    )
    return 0
