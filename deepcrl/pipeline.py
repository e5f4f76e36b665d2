"""The whole path from a deep teacher to a served policy, stage by stage, each reading the last's artifact."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from deepcrl._io import write_text_atomic
from deepcrl.config import PipelineConfig

STAGES = ("train the teacher", "distil the student", "export to ONNX", "benchmark the server")


def run_pipeline(cfg: PipelineConfig, console: Console | None = None) -> dict[str, Any]:
    """Run train -> distill -> export -> serve benchmark; returns (and writes) the summary.

    Args:
        cfg: the pipeline config (checked when it was built).
        console: where progress goes (stdout by default; plain full lines when stdout is not a terminal).
    """
    from deepcrl import envs
    from deepcrl.cli import console as make_console
    from deepcrl.evaluate import evaluate
    from deepcrl.export.config import ExportConfig
    from deepcrl.export.onnx import export
    from deepcrl.export.runtime import OnnxPolicy
    from deepcrl.student.config import DistillConfig
    from deepcrl.teacher.config import TrainConfig
    from deepcrl.cli.distill import distill_with_progress
    from deepcrl.cli.train import train_with_progress

    console = console or make_console()
    envs.check_env_id(cfg.env)  # fail before any work
    out = cfg.out
    teacher_dir, student_dir, onnx_path = out / "teacher", out / "student", out / "policy.onnx"
    summary: dict[str, Any] = {"env": cfg.env, "out": str(out), "seed": cfg.seed, "stages": {}}
    started = time.perf_counter()

    def stage(i: int) -> float:
        title = f"stage {i + 1}/{len(STAGES)}: {STAGES[i]}"
        if console.is_terminal:
            console.rule(f"[bold]{title}")
        else:
            console.print(f"== {title}", highlight=False)
        return time.perf_counter()

    t0 = stage(0)
    teacher = train_with_progress(TrainConfig(env=cfg.env, out=teacher_dir, steps=cfg.steps, depth=cfg.depth,
                                              seed=cfg.seed, resume=cfg.resume, max_minutes=cfg.teacher_max_minutes))
    summary["stages"]["train"] = {"seconds": time.perf_counter() - t0, "run_dir": str(teacher_dir),
                                  "env_steps": teacher.get("env_steps"), "eval": teacher.get("eval")}

    t0 = stage(1)
    report = distill_with_progress(DistillConfig(run=teacher_dir, out=student_dir, hidden=cfg.hidden,
                                                 method=cfg.method, distill_steps=cfg.distill_steps, seed=cfg.seed,
                                                 eval_episodes=cfg.eval_episodes))  # the rest: distill's defaults
    summary["stages"]["distill"] = {"seconds": time.perf_counter() - t0, "run_dir": str(student_dir),
                                    "teacher": _pick(report["teacher"]), "student": _pick(report["student"]),
                                    "ratios": report["ratios"]}

    t0 = stage(2)
    exported = export(ExportConfig(run=student_dir, out=onnx_path, seed=cfg.seed))
    onnx_eval = evaluate(cfg.env, OnnxPolicy(onnx_path), episodes=cfg.eval_episodes,
                         seed=report["eval"]["seed"])
    summary["stages"]["export"] = {"seconds": time.perf_counter() - t0, "path": str(onnx_path),
                                   "size_bytes": exported.get("size_bytes"),
                                   "parity_max_abs_diff": exported.get("max_abs_diff"),
                                   "onnx_eval": onnx_eval.as_dict()}
    console.print(f"ONNX policy in the simulator: success {onnx_eval.success:.3f} "
                  f"(student checkpoint: {report['student']['eval']['success']:.3f}, same episodes)")
    summary["stages"]["served_eval"] = _served_eval(onnx_path, cfg.env, cfg.eval_episodes, report["eval"]["seed"],
                                                    onnx_eval)
    console.print(f"served policy in the simulator (eval --url): success "
                  f"{summary['stages']['served_eval']['eval']['success']:.3f}, equal to eval --model: "
                  f"{summary['stages']['served_eval']['equal_to_model']}")

    if cfg.bench_duration_s > 0:
        from deepcrl.bench.config import BenchServeConfig
        from deepcrl.bench.serve import run as bench_serve

        t0 = stage(3)
        bench = bench_serve(BenchServeConfig(model=onnx_path, out=out / "serve_latency",
                                             duration_s=cfg.bench_duration_s, seed=cfg.seed))
        summary["stages"]["bench"] = {"seconds": time.perf_counter() - t0, "json": bench.get("json"),
                                      "png": bench.get("png"), "summary": bench.get("summary")}
    summary["seconds"] = time.perf_counter() - started
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=str))
    _print_summary(console, summary)
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


def _print_summary(console: Console, s: dict[str, Any]) -> None:
    st = s["stages"]
    d = st["distill"]
    t_eval, s_eval = d["teacher"].get("eval", {}), d["student"].get("eval", {})
    table = Table(title=f"deepcrl pipeline on {s['env']} ({s['seconds'] / 60:.1f} min)")
    for col in ("", "teacher", "student", "ONNX student"):
        table.add_column(col, justify="left" if not col else "right")
    onnx_eval = st["export"]["onnx_eval"]

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    table.add_row("success", pct(t_eval.get("success")), pct(s_eval.get("success")), pct(onnx_eval["success"]))
    table.add_row("detour success", pct(t_eval.get("detour_success")), pct(s_eval.get("detour_success")),
                  pct(onnx_eval["detour_success"]))
    table.add_row("time at goal", f"{t_eval.get('time_at_goal', 0):.1f}", f"{s_eval.get('time_at_goal', 0):.1f}",
                  f"{onnx_eval['time_at_goal']:.1f}")
    table.add_row("parameters", f"{d['teacher'].get('params', 0):,}", f"{d['student'].get('params', 0):,}",
                  f"{st['export']['size_bytes'] or 0:,} bytes")
    table.add_row("JAX latency (1 action)", f"{d['teacher'].get('latency_us', 0):.0f} µs",
                  f"{d['student'].get('latency_us', 0):.0f} µs", "")
    console.print(table)
    console.print(f"ONNX parity vs JAX: max |diff| {st['export']['parity_max_abs_diff']:.1e}")
    if "served_eval" in st:
        console.print(f"eval --url (served) equal to eval --model (file): {st['served_eval']['equal_to_model']}")
    bench = st.get("bench")
    if bench and bench.get("summary"):
        lat = Table(title="serve benchmark (loopback, keep-alive) vs its targets")
        for col in ("figure", "measured", "target", "met"):
            lat.add_column(col, justify="left" if col == "figure" else "right")
        for name, t in bench["summary"].get("targets", {}).items():
            unit = "x" if "ratio" in name else " µs"
            lat.add_row(name, f"{t['value']:g}{unit}", f"{t['target']:g}{unit}", "yes" if t["met"] else "NO")
        console.print(lat)
    console.print(f"plots: {Path(s['out']) / 'teacher' / 'curves.png'}, {Path(s['out']) / 'student' / 'curves.png'}"
                  + (f", {bench['png']}" if bench and bench.get("png") else ""))
    console.print(f"summary: {Path(s['out']) / 'summary.json'}")
