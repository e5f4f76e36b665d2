"""A body on the GPU, end to end: ant teachers at depth 4 and 64 (trained by benchmarks/gpu_lease.sh while the
lease's wheels travel), the better one distilled, exported, and run by ONNX Runtime's CUDA provider.

Stages (each bounded; a failing stage is one sentence in the JSON and the next still runs; the JSON is written
after every stage, so a lease cut short keeps what it measured):

1. curves: success and time at goal against env steps and wall time from each run's metrics.jsonl (+ PNG);
2. distil: the better teacher (final success, then time at goal) into a 64,64 student (`deepcrl distill
   --json`: teacher and student on the same episodes);
3. export: the student (and the depth-64 teacher: a deep tower exports as one ONNX Loop) to .onnx;
4. latency: ONNX Runtime at batch 1 and 256 with the CUDA provider and the CPU provider, side by side,
   recording the providers the session really runs on (ONNX Runtime falls back to the CPU silently);
5. serve: `deepcrl serve` on the student (with `--device cuda` where the server has it), loopback latency
   through the Python client.

    python benchmarks/gpu_bodies.py --runs-dir /tmp/lease --out benchmarks/results/gpu_bodies.json
    python benchmarks/gpu_bodies.py --smoke --runs-dir /tmp/lease_smoke --out /tmp/gpu_bodies.json   # CPU
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli(args: list[str], timeout: float) -> dict:
    """Run `deepcrl ARGS --json` in a subprocess; its JSON, or one sentence on failure."""
    cmd = [sys.executable, "-m", "deepcrl.cli", *args, "--json"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"`deepcrl {args[0]}` ran past {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": f"`deepcrl {args[0]}` exited {proc.returncode}: {proc.stderr.strip()[-400:]}"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"`deepcrl {args[0]}` printed no JSON: {proc.stdout[-300:]}"}


def curves(run: Path) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [{"env_steps": r["env_steps"], "wall_s": r.get("wall_s"), **r["eval"]} for r in records if r.get("eval")]
    manifest = json.loads((run / "manifest.json").read_text())
    pick = ("env_steps", "wall_s", "success", "time_at_goal", "final_distance")
    return {"iterations": len(records), "env_steps": records[-1]["env_steps"] if records else 0,
            "wall_s": records[-1].get("wall_s") if records else None,
            "evals": [{k: r.get(k) for k in pick} for r in evals],
            "final": manifest.get("metrics"), "network": manifest.get("network")}


def plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, info in runs.items():
        ev = info.get("evals") or []
        if not ev:
            continue
        steps = [e["env_steps"] for e in ev]
        axes[0].plot(steps, [e.get("success") for e in ev], marker="o", label=name)
        axes[1].plot(steps, [e.get("time_at_goal") for e in ev], marker="o", label=name)
    axes[0].set(xlabel="env steps", ylabel="success", title="ant: success")
    axes[1].set(xlabel="env steps", ylabel="time at goal (of 1000)", title="ant: time at goal")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _score(info: dict) -> tuple:
    last = (info.get("evals") or [{}])[-1]
    return (last.get("success") or 0.0, last.get("time_at_goal") or 0.0)


def ort_latency(model: Path, provider: str, batches=(1, 256), calls: int = 300) -> dict:
    import numpy as np
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls") and provider == "CUDAExecutionProvider":
        try:
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - a missing DLL shows as the CPU fallback below
            pass
    sess = ort.InferenceSession(str(model), providers=[provider, "CPUExecutionProvider"])
    running = sess.get_providers()
    shapes = {i.name: i.shape[1] for i in sess.get_inputs()}
    out = {"asked": provider, "running": running, "ran_on_asked": running[0] == provider}
    rng = np.random.default_rng(0)
    for b in batches:
        feed = {n: rng.standard_normal((b, d)).astype(np.float32) for n, d in shapes.items()}
        for _ in range(20):
            sess.run(None, feed)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - t0)
        times.sort()
        out[f"batch_{b}"] = {"p50_us": 1e6 * times[len(times) // 2], "p99_us": 1e6 * times[int(len(times) * 0.99)],
                             "rows_per_s": b / times[len(times) // 2]}
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_latency(model: Path, device: str | None, seconds: float) -> dict:
    import numpy as np

    from deepcrl.serve.client import PolicyClient

    port = _free_port()
    base = [sys.executable, "-m", "deepcrl.cli", "serve", "--model", str(model), "--port", str(port)]
    cmd = base + (["--device", device] if device else [])
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = PolicyClient(f"http://127.0.0.1:{port}")
        deadline = time.time() + 60
        meta = None
        while time.time() < deadline and proc.poll() is None:
            try:
                meta = client.metadata()
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.3)
        if meta is None:
            err = proc.stderr.read()[-400:] if proc.poll() is not None else "no answer in 60 s"
            return {"error": f"the server did not start ({' '.join(cmd[3:])}): {err.strip()}"}
        from deepcrl.export.contract import GOAL_SIZE, OBS_SIZE

        obs = np.zeros(int(meta[OBS_SIZE]), np.float32)
        goal = np.zeros(int(meta[GOAL_SIZE]), np.float32)
        times, end = [], time.time() + seconds
        while time.time() < end:
            t0 = time.perf_counter()
            client.act(obs, goal)
            times.append(time.perf_counter() - t0)
        times.sort()
        return {"device": device or "default", "requests": len(times), "metadata": meta,
                "p50_us": 1e6 * times[len(times) // 2], "p99_us": 1e6 * times[int(len(times) * 0.99)]}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs-dir", type=Path, required=True, help="holds ant_d4/ and ant_d64/ (deepcrl train runs)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu_bodies.json")
    p.add_argument("--smoke", action="store_true", help="tiny distillation, CPU provider only, short serve")
    p.add_argument("--stages", default="curves,distill,export,latency,serve",
                   help="comma-separated subset; results merge into an existing --out JSON")
    args = p.parse_args()
    wanted = set(args.stages.split(","))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = args.runs_dir / "bodies"
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"note": __doc__.split("\n\n")[0], "stages": {}}
    if args.out.exists():
        result = json.loads(args.out.read_text())
    result.setdefault("commands", []).append(" ".join(sys.argv))

    def save() -> None:
        args.out.write_text(json.dumps(result, indent=1, default=str))

    def stage(name: str, fn) -> object:
        if name not in wanted:
            return result["stages"].get(name)
        t0 = time.time()
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - recorded, the next stage runs
            value = {"error": f"{type(exc).__name__}: {exc}"}
        result["stages"][name] = {"seconds": round(time.time() - t0, 1), **(value if isinstance(value, dict)
                                                                             else {"value": value})}
        save()
        print(f"[{name}] {json.dumps(result['stages'][name], default=str)[:600]}", flush=True)
        return value

    try:
        from deepcrl.bench.common import machine_facts

        result.setdefault("machine", machine_facts())
    except Exception as exc:  # noqa: BLE001
        result["machine"] = {"error": f"{type(exc).__name__}: {exc}"}
    save()

    runs = {d: args.runs_dir / f"ant_d{d}" for d in (4, 64)}
    info = stage("curves", lambda: {f"depth_{d}": curves(r) for d, r in runs.items() if (r / "metrics.jsonl").exists()})
    info = {k: v for k, v in (info or {}).items() if k.startswith("depth_")}
    if info:
        if "curves" in wanted:
            plot(info, args.out.with_suffix(".png"))
        best = max(info, key=lambda k: _score(info[k]))
        teacher = runs[int(best.split("_")[1])]
    else:
        teacher = None
    result["teacher"] = str(teacher)
    student = work / "student"
    if teacher is not None and (teacher / "manifest.json").exists():
        flags = ["--distill-steps", "200", "--rounds", "2", "--num-envs", "8", "--unroll-length", "50",
                 "--eval-episodes", "8", "--round-eval-episodes", "0"] if args.smoke else \
                ["--method", "dagger", "--hidden", "64,64", "--distill-steps", "6000", "--rounds", "4",
                 "--num-envs", "128", "--eval-episodes", "256"]
        stage("distill", lambda: _cli(["distill", "--run", str(teacher), "--out", str(student), *flags],
                                      timeout=900 if args.smoke else 240))
    onnx = {"student": work / "student.onnx", "teacher_d64": work / "teacher_d64.onnx"}
    stage("export", lambda: {
        "student": _cli(["export", "--run", str(student), "--out", str(onnx["student"])], timeout=180),
        "teacher_d64": _cli(["export", "--run", str(runs[64]), "--out", str(onnx["teacher_d64"])], timeout=240)})
    providers = ["CPUExecutionProvider"] if args.smoke else ["CUDAExecutionProvider", "CPUExecutionProvider"]
    stage("latency", lambda: {f"{name}/{prov}": ort_latency(path, prov, calls=30 if args.smoke else 300)
                              for name, path in onnx.items() if path.exists() for prov in providers})
    seconds = 2.0 if args.smoke else 8.0
    stage("serve", lambda: {dev or "default": serve_latency(onnx["student"], dev, seconds)
                            for dev in [None]} if onnx["student"].exists()
          else {"error": "no student .onnx to serve"})
    save()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
