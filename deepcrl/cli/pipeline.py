"""`deepcrl pipeline`: every stage in a row on a CPU budget, drawn as it runs, then a one-screen summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepcrl.config import PipelineConfig


def run(cfg: PipelineConfig) -> int:
    from deepcrl.cli import json_output, print_json

    with json_output(cfg.json):
        summary = run_with_progress(cfg)
    if cfg.json:
        print_json(summary)
    return 0


def run_with_progress(cfg: PipelineConfig, console=None) -> dict[str, Any]:
    """`deepcrl.pipeline.run_pipeline` with stage rules, progress displays and the summary tables."""
    from deepcrl.cli import console as make_console
    from deepcrl.pipeline import run_pipeline

    view = PipelineView(console or make_console())
    try:
        summary = run_pipeline(cfg, progress_fn=view)
    finally:
        view.close()
    print_summary(view.console, summary)
    return summary


class PipelineView:
    """Draws `run_pipeline`'s events: a rule per stage, train's and distill's progress, the ONNX check."""

    def __init__(self, console):
        self.console = console
        self.display = self.show = None
        self.student_success: float | None = None

    def __call__(self, record: dict[str, Any]) -> None:
        stage, event = record["stage"], record["event"]
        if event == "start":
            self.close()
            title = f"stage {record['index'] + 1}/{record['stages']}: {record['title']}"
            if self.console.is_terminal:
                self.console.rule(f"[bold]{title}")
            else:
                self.console.print(f"== {title}", highlight=False)
            if "total" in record:
                self._open(stage, record)
        elif event == "update" and self.show is not None:
            self.show(record)
        elif event == "end":
            self.close()
            if stage == "distill":
                self.student_success = record["student"].get("eval", {}).get("success")
            if stage == "export":
                self.console.print(f"ONNX policy in the simulator: success {record['onnx_eval']['success']:.3f} "
                                   f"(student checkpoint: {self.student_success:.3f}, same episodes)")
            if stage == "served_eval":
                self.console.print(f"served policy in the simulator (eval --url): success {record['eval']['success']:.3f}, "
                                   f"equal to eval --model: {record['equal_to_model']}")

    def _open(self, stage: str, record: dict[str, Any]) -> None:
        from deepcrl.cli.distill import show_distill
        from deepcrl.cli.progress import Display
        from deepcrl.cli.train import TrainProgress

        self.display = Display(stage, total=record["total"], unit=record["unit"]).__enter__()
        display, rounds = self.display, record.get("rounds")
        self.show = TrainProgress(display) if stage == "train" else (
            lambda r: show_distill(display, r, rounds))

    def close(self) -> None:
        if self.display is not None:
            self.display.__exit__(None, None, None)
        self.display = self.show = None


def print_summary(console, s: dict[str, Any]) -> None:
    """The pipeline's one-screen summary: teacher vs student vs ONNX student, then the serve targets."""
    from rich.table import Table

    from deepcrl.artifacts import CURVES
    from deepcrl.pipeline import SUMMARY

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
    plots = [Path(st[stage]["run_dir"]) / CURVES for stage in ("train", "distill")]
    console.print(f"plots: {plots[0]}, {plots[1]}" + (f", {bench['png']}" if bench and bench.get("png") else ""))
    console.print(f"summary: {Path(s['out']) / SUMMARY}")
