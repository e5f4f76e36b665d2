"""The depth benchmark end to end on a toy size (slow: several compiles; run with -m slow)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_depth_bench_writes_json_and_png(tmp_path):
    from deepcrl.bench.config import BenchTeacherConfig
    from deepcrl.cli.bench import run_teacher

    out = tmp_path / "teacher_depth.json"
    assert run_teacher(BenchTeacherConfig(depths=(4, 8), width=16, batch_size=8, max_reps=2, out=out)) == 0
    results = json.loads(out.read_text())
    modes = {(r["depth"], r["scan"], r["remat"]) for r in results["rows"]}
    assert modes == {(d, s, r) for d in (4, 8) for s, r in ((True, False), (True, True), (False, False))}
    for row in results["rows"]:
        assert row["finite"] and row["compile_s"] > 0 and row["step_s"] > 0 and row["peak_bytes"] > 0
        assert row["actor_params"] > 0 and row["critic_params"] > row["actor_params"]
    deep = next(r for r in results["rows"] if (r["depth"], r["scan"], r["remat"]) == (8, True, False))
    deep_remat = next(r for r in results["rows"] if (r["depth"], r["scan"], r["remat"]) == (8, True, True))
    assert deep_remat["temp_bytes"] < deep["temp_bytes"]  # remat keeps fewer activations
    assert results["machine"]["cpu_count"] >= 1 and "shared_machine" in results["machine"]
    assert "unrolled_over_scan_compile_depth_8" in results["summary"]
    assert out.with_suffix(".png").stat().st_size > 10_000
