"""Export benchmark: per model, file size, export time, parity error, and latency of JAX jit vs ONNX Runtime
fp32 vs int8 on CPU (batch 1 and 256), plus the ORT session settings (threads, graph optimisation).

    python benchmarks/export.py                    # students 64x2 / 256x2 / 256x3, teachers depth 4/64/256
    python benchmarks/export.py --quick            # smaller set, for a smoke run

Writes benchmarks/results/export.json (with the machine's facts, via deepcrl.bench.common.write_result). Models are freshly initialised (latency does not depend on the weights;
the int8 error of a trained policy is reported by `deepcrl export --quantize int8` itself). Every number is per
numpy-in / numpy-out call, i.e. what a server or robot loop pays: `latency_us` is the median wall time,
`cpu_us` the process CPU time (all threads) per call, which other jobs on shared cores disturb much less.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import tyro  # noqa: E402

from deepcrl._logging import quiet  # noqa: E402
from deepcrl.bench.common import machine_facts, write_result  # noqa: E402
from deepcrl.contract import GOAL, OBSERVATION  # noqa: E402

quiet().__enter__()  # quiet for the whole run (the process exits after it)

STUDENTS = {"student_64x2": [64, 64], "student_256x2": [256, 256], "student_256x3": [256, 256, 256]}
TEACHERS = {"teacher_d4_w256": 4, "teacher_d64_w256": 64, "teacher_d256_w256": 256}


def median_us(fn, seconds: float, min_iters: int = 5) -> float:
    """Median wall time per call (noisy when other jobs share the cores)."""
    for _ in range(2):
        fn()
    times, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < min_iters:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e6)


def cpu_us(fn, seconds: float, min_iters: int = 5) -> float:
    """Process CPU time per call (all threads): robust to other jobs taking turns on the cores."""
    fn()
    n, start = 0, time.process_time()
    while time.process_time() - start < seconds or n < min_iters:
        fn()
        n += 1
    return float((time.process_time() - start) / n * 1e6)


@dataclasses.dataclass(frozen=True)
class ExportBenchConfig:
    """Size, export time, parity and latency of exported policies (JAX jit vs ONNX Runtime fp32 vs int8)."""

    quick: bool = False
    """Two small models only (a smoke run)."""
    seconds: float = 0.4
    """Time budget per latency measurement."""
    out: Path = Path(__file__).parent / "results" / "export.json"
    """JSON output."""


def machine() -> dict:
    import onnxruntime as ort

    return {**machine_facts(jax_devices=True), "ort_providers": ort.get_available_providers(),
            "note": "2-core machine shared with other jobs while this ran: absolute times are noisy, compare "
                    "ratios measured side by side"}


def bench_model(name: str, kind: str, actor_cfg: dict, tmp: Path, seconds: float) -> dict:
    import onnxruntime as ort

    from deepcrl.export.config import ExportConfig
    from deepcrl.export.onnx import export, rollout_states, to_onnx_model
    from deepcrl.onnx_policy import OnnxPolicy, session, session_options
    from deepcrl.policy import init_artifact, load_policy

    ckpt = tmp / name
    init_artifact(ckpt, kind, "point_maze", actor_cfg)
    policy = load_policy(ckpt)
    n_params = int(sum(np.size(x) for x in __import__("jax").tree.leaves(policy.params)))
    t = time.perf_counter()
    fp32 = export(ExportConfig(run=ckpt, out=tmp / f"{name}.onnx"))
    fp32_wall = time.perf_counter() - t
    int8 = export(ExportConfig(run=ckpt, out=tmp / f"{name}.int8.onnx", quantize="int8", max_int8_error=2.0))
    obs, goal = rollout_states(policy, 256, seed=7)
    row = {
        "kind": kind, "network": actor_cfg, "params": n_params,
        "file_bytes": {"fp32": fp32["size_bytes"], "int8": int8["size_bytes"]},
        "export_seconds": {"jax2onnx": fp32["export_seconds"], "export_with_checks": round(fp32_wall, 2)},
        "parity_max_abs_diff": fp32["max_abs_diff"],
        "int8_max_abs_diff_rollout": int8["max_abs_diff"], "int8_max_abs_diff_random": int8["max_abs_diff_random"],
        "latency_us": {},
    }
    runners = {
        "jax_jit": policy,
        "ort_fp32": OnnxPolicy(tmp / f"{name}.onnx", providers=["CPUExecutionProvider"]),
        "ort_int8": OnnxPolicy(tmp / f"{name}.int8.onnx", providers=["CPUExecutionProvider"]),
    }
    if "CUDAExecutionProvider" in ort.get_available_providers():
        runners["ort_cuda_fp32"] = OnnxPolicy(tmp / f"{name}.onnx", providers=["CUDAExecutionProvider"])
    if kind == "teacher":  # the same graph with the stacked weights still carried through the Loop
        carried = tmp / f"{name}.carried.onnx"
        carried.write_bytes(to_onnx_model(policy, hoist_loops=False).SerializeToString())
        runners["ort_fp32_loop_carried_weights"] = session(carried, 1, providers=["CPUExecutionProvider"])
    row["cpu_us"] = {}
    for batch in (1, 256):
        o, g = obs[:batch], goal[:batch]
        calls = {k: (lambda r=r: r.run(None, {OBSERVATION: o, GOAL: g})) if isinstance(r, ort.InferenceSession)
                 else (lambda r=r: r(o, g)) for k, r in runners.items()}
        for key, measure in (("latency_us", median_us), ("cpu_us", cpu_us)):
            lat = {k: round(measure(call, seconds), 2) for k, call in calls.items()}
            lat["speedup_ort_fp32_vs_jax"] = round(lat["jax_jit"] / lat["ort_fp32"], 3)
            lat["speedup_int8_vs_fp32"] = round(lat["ort_fp32"] / lat["ort_int8"], 3)
            if "ort_fp32_loop_carried_weights" in lat:
                lat["speedup_hoisted_vs_carried"] = round(lat["ort_fp32_loop_carried_weights"] / lat["ort_fp32"], 3)
            row[key][str(batch)] = lat
    # Session settings: threads x graph optimisation on the fp32 model, side by side.
    settings = {}
    for threads in (1, 2):
        for level in ("ORT_DISABLE_ALL", "ORT_ENABLE_ALL"):
            so = session_options(threads)
            so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
            sess = ort.InferenceSession(str(tmp / f"{name}.onnx"), so, providers=["CPUExecutionProvider"])
            for batch in (1, 256):
                feed = {OBSERVATION: obs[:batch], GOAL: goal[:batch]}
                settings[f"threads{threads}_{level}_b{batch}"] = {
                    "wall_us": round(median_us(lambda s=sess, f=feed: s.run(None, f), seconds / 2), 2),
                    "cpu_us": round(cpu_us(lambda s=sess, f=feed: s.run(None, f), seconds / 2), 2)}
    row["ort_session_settings_us"] = settings
    print(f"{name}: {n_params} params, {row['file_bytes']['fp32'] / 1e6:.2f} MB, export {fp32['export_seconds']:.2f} s, "
          f"parity {fp32['max_abs_diff']:.1e}, int8 err {int8['max_abs_diff']:.3f}; cpu us per call "
          f"{json.dumps(row['cpu_us'])}", flush=True)
    return row


def main(cfg: ExportBenchConfig) -> None:
    models = [(n, "student", {"hidden": h}) for n, h in STUDENTS.items()]
    models += [(n, "teacher", {"depth": d, "width": 256}) for n, d in TEACHERS.items()]
    if cfg.quick:
        models = [models[0], models[3]]
    results = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "seconds_per_measurement": cfg.seconds, "models": {}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name, kind, model_cfg in models:
            results["models"][name] = bench_model(name, kind, model_cfg, Path(tmp), cfg.seconds)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    write_result(cfg.out, results)
    print(f"wrote {cfg.out} ({results['total_seconds']} s)")


if __name__ == "__main__":
    main(tyro.cli(ExportBenchConfig))
