"""The whole path from a deep teacher to a served policy, stage by stage, each reading the last's artifact.

A library call: it returns (and writes) the summary and reports its progress as dicts through `progress_fn`;
`deepcrl pipeline` (deepcrl/cli/pipeline.py) draws them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deepcrl._io import write_text_atomic
from deepcrl.config import PipelineConfig

SUMMARY = "summary.json"  # OUT/summary.json, beside the stages' run directories
STAGES = {"train": "train the teacher", "distill": "distil the student", "export": "export to ONNX",
          "served_eval": "score the served file (eval --url)", "bench": "benchmark the server"}


def run_pipeline(cfg: PipelineConfig, progress_fn: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run train -> distill -> export -> served eval -> serve benchmark; returns (and writes OUT/summary.json) the summary.

    Args:
        cfg: the pipeline config (checked when it was built).
        progress_fn: called with one dict per event, each with ``stage`` (a key of `STAGES`) and ``event``:
            ``start`` (``index``, ``stages``, ``title``; for train and distill the display's ``total`` and
            ``unit``, for distill its ``rounds``), ``update`` (train's or distill's own record, merged in) and
            ``end`` (the stage's entry of the summary).
    """
    from deepcrl import envs
    from deepcrl.evaluate import evaluate
    from deepcrl.export.config import ExportConfig
    from deepcrl.export.onnx import export
    from deepcrl.onnx_policy import OnnxPolicy
    from deepcrl.student.config import DistillConfig
    from deepcrl.student.distill import distill
    from deepcrl.teacher.config import TrainConfig, planned_env_steps
    from deepcrl.teacher.train import train

    emit = progress_fn or (lambda record: None)
    envs.check_env_id(cfg.env)  # fail before any work
    out = cfg.out
    teacher_dir, student_dir, onnx_path = out / "teacher", out / "student", out / "policy.onnx"
    summary: dict[str, Any] = {"env": cfg.env, "out": str(out), "seed": cfg.seed, "stages": {}}
    started = time.perf_counter()

    def start(stage: str, **facts: Any) -> float:
        emit({"stage": stage, "event": "start", "index": list(STAGES).index(stage), "stages": len(STAGES),
              "title": STAGES[stage], **facts})
        return time.perf_counter()

    def end(stage: str, t0: float, **facts: Any) -> None:
        summary["stages"][stage] = {"seconds": time.perf_counter() - t0, **facts}
        emit({"stage": stage, "event": "end", **summary["stages"][stage]})

    def updates(stage: str) -> Callable[[dict[str, Any]], None]:
        return lambda record: emit({"stage": stage, "event": "update", **record})

    train_cfg = TrainConfig(env=cfg.env, out=teacher_dir, steps=cfg.steps, depth=cfg.depth, seed=cfg.seed,
                            resume=cfg.resume, max_minutes=cfg.teacher_max_minutes)
    t0 = start("train", total=planned_env_steps(train_cfg), unit="env steps")
    teacher = train(train_cfg, progress_fn=updates("train"))
    end("train", t0, run_dir=str(teacher_dir), env_steps=teacher.get("env_steps"), eval=teacher.get("eval"))

    distill_cfg = DistillConfig(run=teacher_dir, out=student_dir, hidden=cfg.hidden, method=cfg.method,
                                distill_steps=cfg.distill_steps, seed=cfg.seed, eval_episodes=cfg.eval_episodes)
    t0 = start("distill", total=distill_cfg.distill_steps, unit="steps", rounds=distill_cfg.rounds)
    report = distill(distill_cfg, progress_fn=updates("distill"))
    end("distill", t0, run_dir=str(student_dir), teacher=_pick(report["teacher"]), student=_pick(report["student"]),
        ratios=report["ratios"])

    t0 = start("export")
    exported = export(ExportConfig(run=student_dir, out=onnx_path, seed=cfg.seed))
    onnx_eval = evaluate(cfg.env, OnnxPolicy(onnx_path), episodes=cfg.eval_episodes, seed=report["eval"]["seed"])
    end("export", t0, path=str(onnx_path), size_bytes=exported.get("size_bytes"),
        parity_max_abs_diff=exported.get("max_abs_diff"), onnx_eval=onnx_eval.as_dict())

    t0 = start("served_eval")
    end("served_eval", t0, **_served_eval(onnx_path, cfg.env, cfg.eval_episodes, report["eval"]["seed"], onnx_eval))

    if cfg.bench_duration_s > 0:
        from deepcrl.bench.config import BenchServeConfig
        from deepcrl.bench.serve import run as bench_serve

        t0 = start("bench")
        bench = bench_serve(BenchServeConfig(model=onnx_path, out=out / "serve_latency",
                                             duration_s=cfg.bench_duration_s, seed=cfg.seed))
        end("bench", t0, json=bench.get("json"), png=bench.get("png"), summary=bench.get("summary"))
    summary["seconds"] = time.perf_counter() - started
    write_text_atomic(out / SUMMARY, json.dumps(summary, indent=2, default=str))
    return summary


def _served_eval(onnx_path: Path, env_id: str, episodes: int, seed: int, onnx_eval) -> dict[str, Any]:
    """`deepcrl eval --url` against `deepcrl serve --model onnx_path` (a subprocess on a free loopback port):
    the served policy on the same episodes as `eval --model`, and whether every figure is equal."""
    import sys

    from deepcrl.bench.serve import _start, _stop
    from deepcrl.evaluate import evaluate
    from deepcrl.serve.client import PolicyClient

    t0 = time.perf_counter()
    proc, url = _start([sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(onnx_path), "--port", "0"])
    try:
        client = PolicyClient(url)
        try:
            served = evaluate(env_id, client, episodes=episodes, seed=seed)
        finally:
            client.close()
    finally:
        _stop(proc)
    a, b = served.as_dict(), onnx_eval.as_dict()
    return {"seconds": time.perf_counter() - t0, "eval": a,
            "equal_to_model": all(a[k] == b[k] for k in ("success", "time_at_goal", "final_success")),
            "final_distance_abs_diff": abs(a["final_distance"] - b["final_distance"])}


def _pick(info: dict[str, Any]) -> dict[str, Any]:
    keys = ("params", "flops_per_action", "latency_us", "eval")
    return {k: info[k] for k in keys if k in info}
