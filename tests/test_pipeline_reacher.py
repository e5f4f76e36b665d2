"""`deepcrl pipeline --env reacher` end to end at a tiny budget: every stage's artifacts and the summary's keys
(not the skill: the budget is far too small to learn; benchmarks/pipeline.py --env reacher measures that)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow  # MJX compiles of the reacher (train, distil, eval) take minutes on a 2-core CPU
def test_pipeline_on_reacher_writes_every_stage(tmp_path):
    from deepcrl.config import PipelineConfig
    from deepcrl.pipeline import run_pipeline

    out = tmp_path / "p"
    summary = run_pipeline(PipelineConfig(env="reacher", out=out, steps=1, distill_steps=20, eval_episodes=8,
                                          bench_duration_s=0.2))
    for path in ("teacher/manifest.json", "student/manifest.json", "student/report.json", "policy.onnx",
                 "summary.json"):
        assert (out / path).exists(), path
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["env"] == "reacher"
    assert set(on_disk["stages"]) >= {"train", "distill", "export", "served_eval", "bench"}
    assert on_disk["stages"]["export"]["parity_max_abs_diff"] <= 1e-4
    served = summary["stages"]["served_eval"]
    assert served["eval"]["episodes"] == 8 and served["equal_to_model"] is True
    assert on_disk["stages"]["distill"]["ratios"]["params"] > 1
