"""`deepcrl distill`: distil a teacher into a student and print the teacher-vs-student comparison."""

from __future__ import annotations

from deepcrl.student.config import DistillConfig


def run(cfg: DistillConfig) -> int:
    from rich.console import Console

    from deepcrl.student.distill import distill

    report = distill(cfg)
    t, s, r = report["teacher"], report["student"], report["ratios"]
    Console().print(
        f"student -> {report['out']}\n"
        f"  success        teacher {t['eval']['success']:.3f}  student {s['eval']['success']:.3f}  "
        f"random {report['random']['eval']['success']:.3f}  (retained {r['success_retained']:.2%})\n"
        f"  time at goal   teacher {t['eval']['time_at_goal']:.1f}  student {s['eval']['time_at_goal']:.1f}\n"
        f"  parameters     teacher {t['params']:,}  student {s['params']:,}  ({r['params']:.1f}x fewer)\n"
        f"  latency (JAX)  teacher {t['latency_us']:.0f} us  student {s['latency_us']:.0f} us  "
        f"({r['latency']:.1f}x faster)",
        highlight=False,
    )
    return 0
