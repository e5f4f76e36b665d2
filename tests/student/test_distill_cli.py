"""`deepcrl distill`'s printed summary."""

from __future__ import annotations

from pathlib import Path

import deepcrl.cli.distill as cli_distill
from deepcrl.student.config import DistillConfig


def test_summary_of_a_teacher_that_never_succeeds_says_na(monkeypatch, tmp_path, capsys):
    """A teacher with success 0 (a tiny humanoid run) leaves nothing to keep: the kept share is None, printed n/a
    (it was a TypeError traceback)."""
    evals = {"success": 0.0, "time_at_goal": 0.0}
    report = {"out": str(tmp_path / "student"),
              "teacher": {"eval": evals, "params": 1000, "latency_us": 200.0},
              "student": {"eval": evals, "params": 100, "latency_us": 20.0},
              "random": {"eval": evals},
              "ratios": {"success_retained": None, "time_at_goal_retained": None, "params": 10.0, "latency": 10.0}}
    monkeypatch.setattr(cli_distill, "distill_with_progress", lambda cfg: report)
    assert cli_distill.run(DistillConfig(run=Path(tmp_path / "teacher"), out=tmp_path / "student")) == 0
    out = capsys.readouterr().out
    assert "retained n/a" in out and "10.0x fewer" in out
