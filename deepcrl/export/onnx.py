"""JAX policy -> ONNX with jax2onnx, checked against JAX on random and rollout states before it is written.

The exported function is the artifact's own `JaxPolicy.apply_fn` with its parameters closed over, so the
file computes exactly what `deepcrl eval --run` runs: the deterministic tanh action mapped onto the
action bounds. A scanned teacher (`jax.lax.scan` over stacked blocks) becomes one ONNX `Loop`, so the file
and the export time stay small at any depth.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from deepcrl._io import atomic_path
from deepcrl.errors import DeepcrlError
from deepcrl import contract
from deepcrl.export.graph import hoist_loop_invariants, to_float16
from deepcrl.export.source import PARITY_BATCHES, jax_actions, load_source, parity_inputs, rollout_states, worst

__all__ = ["export", "build", "to_onnx_model", "hoist_loop_invariants", "to_float16", "rollout_states",
           "print_report"]


def _load_plugins() -> None:
    """Import only the jax and flax converters of jax2onnx.

    On first use jax2onnx imports every plugin, Equinox's and the examples included; those compile example
    models at import (about 15 s on two cores). deepcrl's graphs only need the jax and flax plugins. If this
    private hook ever changes, jax2onnx's own full import still runs, only slower.
    """
    try:
        from jax2onnx.plugins import plugin_system as ps

        if not getattr(ps, "_already_imported_plugins", True):
            root = Path(ps.__file__).parent
            for sub in ("jax", "flax"):
                ps._import_tree(root / sub, f"jax2onnx.plugins.{sub}")
            ps._already_imported_plugins = True
    except (ImportError, AttributeError, TypeError):  # the private hook changed: the full import still works
        pass


def to_onnx_model(policy, opset: int = 21, fp16: bool = False, hoist_loops: bool = True):
    """The policy as an `onnx.ModelProto`: inputs observation/goal [batch, n] float32, output action.

    Args:
        policy: a `deepcrl.policy.JaxPolicy`.
        opset: ONNX opset.
        fp16: convert weights and compute to float16, keeping float32 inputs and output.
        hoist_loops: read a scanned teacher's stacked weights from outer scope (see `hoist_loop_invariants`).
    """
    from jax2onnx import to_onnx

    _load_plugins()
    params, apply_fn = policy.params, policy.apply_fn

    def act(observation, goal):
        return apply_fn(params, observation, goal)

    try:
        model = to_onnx(
            act,
            [(contract.BATCH_DIM, policy.obs_size), (contract.BATCH_DIM, policy.goal_size)],
            model_name="deepcrl_policy",
            opset=opset,
            input_names=list(contract.INPUT_NAMES),
            output_names=[contract.OUTPUT_NAME],
        )
    except Exception as exc:  # noqa: BLE001 - an unsupported primitive or opset; the user needs one sentence
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise DeepcrlError(f"jax2onnx cannot convert this {policy.manifest.kind}'s policy at opset {opset} "
                           f"({type(exc).__name__}: {first}).") from exc
    if hoist_loops:
        hoist_loop_invariants(model)
    if fp16:
        model = to_float16(model)
    return model



def set_metadata(model, props: dict[str, str]) -> None:
    """Replace a model's `metadata_props` with `props`."""
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _feed(obs: np.ndarray, goal: np.ndarray) -> dict[str, np.ndarray]:
    return {contract.OBSERVATION: obs, contract.GOAL: goal}


def compare(session, inputs: dict, reference: dict) -> dict[str, dict[int, float]]:
    """max |ONNX - JAX| per input set and batch size."""
    out = {}
    for name, (o, g) in inputs.items():
        out[name] = {}
        for b in PARITY_BATCHES:
            got = session.run([contract.OUTPUT_NAME], _feed(o[:b], g[:b]))[0]
            want = reference[name][b]
            if got.shape != want.shape:
                raise DeepcrlError(f"the exported model returned actions of shape {got.shape} at batch {b}, "
                                   f"expected {want.shape}; the model was not written.")
            out[name][b] = float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0
    return out


def session_for(model_bytes: bytes, threads: int = 1):
    """A CPU session on serialised model bytes, with the runtime's options (what the parity check runs)."""
    from deepcrl.onnx_policy import session

    return session(model_bytes, threads, providers=["CPUExecutionProvider"])


def latency_us(session, obs: np.ndarray, goal: np.ndarray, batch: int, seconds: float = 0.3) -> float:
    """Median wall time of one `session.run` at `batch` rows, in microseconds."""
    feed = _feed(obs[:batch], goal[:batch])
    for _ in range(3):
        session.run(None, feed)
    times, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 10:
        t = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e6)


def check_out_path(out: Path, fmt: str) -> Path:
    """Fail early (before the slow work) on an output the export could not write."""
    out = Path(out)
    if fmt == "onnx" and out.suffix != ".onnx":
        raise DeepcrlError(f"the output {out} must end in .onnx for --format onnx (use --format triton or "
                           "savedmodel for a directory).")
    if fmt == "onnx" and out.is_dir():
        raise DeepcrlError(f"the output {out} is a directory; give a file name ending in .onnx.")
    if fmt != "onnx" and out.exists() and not out.is_dir():
        raise DeepcrlError(f"the output {out} is a file; --format {fmt} writes a directory.")
    parent = out if fmt == "triton" else out.parent  # a Triton repository is written into; the rest beside
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepcrlError(f"cannot write to {out}: {exc.strerror or exc} ({parent}).") from exc
    if not os.access(parent, os.W_OK):
        raise DeepcrlError(f"cannot write to {out}: {parent} is not writable.")
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside the target, then rename: a reader never sees half a model."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise DeepcrlError(f"cannot write {path}: {exc.strerror or exc}.") from exc


def build(cfg) -> tuple[bytes, dict[str, Any]]:
    """Export, check and (optionally) quantise; returns the final model bytes and the report.

    Raises:
        DeepcrlError: the checkpoint cannot be loaded, or a parity / quantisation bound is exceeded
            (nothing is written then).
    """
    import onnx

    policy = load_source(cfg.run)
    t0 = time.perf_counter()
    model = to_onnx_model(policy, opset=cfg.opset)
    export_s = time.perf_counter() - t0
    if cfg.fp16:  # before the parity work: a scanned teacher is refused here
        half = onnx.ModelProto()
        half.CopyFrom(model)
        half = to_float16(half)
    fp32_bytes = model.SerializeToString()
    inputs = parity_inputs(policy, cfg.seed)
    reference = jax_actions(policy, inputs)
    fp32 = session_for(fp32_bytes)
    errors = compare(fp32, inputs, reference)
    diff, where, batch = worst(errors)
    if not diff <= cfg.max_diff:  # also catches NaN
        raise DeepcrlError(f"the ONNX model disagrees with JAX: max |ONNX - JAX| = {diff:.3g} on {where} inputs at "
                           f"batch {batch} (tolerance {cfg.max_diff:g}); nothing was written.")
    report: dict[str, Any] = {
        "kind": policy.manifest.kind, "env_id": policy.manifest.env_id, "source": str(cfg.run),
        "export_seconds": round(export_s, 3), "tolerance": cfg.max_diff,
        "parity": {"fp32": {n: {str(b): v for b, v in per.items()} for n, per in errors.items()}},
        "fp32_max_abs_diff": diff, "precision": "fp32",
    }
    extra = {"precision": "fp32", "parity_max_abs_diff": f"{diff:.3e}", "parity_tolerance": f"{cfg.max_diff:g}",
             "parity_batches": ",".join(map(str, PARITY_BATCHES)), "opset": str(cfg.opset)}
    final = model
    if cfg.quantize == "int8":
        from deepcrl.export.quantize import quantize_int8

        final = quantize_int8(model, cfg.int8_mode, calibration=inputs["rollout"])
        report.update(_check_reduced(final, fp32, inputs, reference, cfg.max_int8_error, "int8", "--max-int8-error"))
        report["int8_mode"] = cfg.int8_mode
        extra["int8_mode"] = cfg.int8_mode
    elif cfg.fp16:
        final = half
        report.update(_check_reduced(final, fp32, inputs, reference, cfg.max_fp16_error, "fp16", "--max-fp16-error"))
    if final is not model:
        extra.update({"precision": report["precision"], "parity_max_abs_diff": f"{report['max_abs_diff']:.3e}",
                      "parity_tolerance": f"{report['tolerance']:g}", "fp32_parity_max_abs_diff": f"{diff:.3e}"})
    else:
        report["max_abs_diff"] = diff
    set_metadata(final, contract.metadata_for(policy, extra))
    try:
        onnx.checker.check_model(final, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise DeepcrlError(f"the exported model fails onnx.checker ({str(exc).splitlines()[0]}); nothing was written.") from exc
    report["metadata"] = {p.key: p.value for p in final.metadata_props}
    return final.SerializeToString(), report


def _check_reduced(model, fp32, inputs, reference, bound: float, precision: str, flag: str) -> dict[str, Any]:
    """Action error and speed of a reduced-precision model against JAX and the float32 model."""
    session = session_for(model.SerializeToString())
    errors = compare(session, inputs, reference)
    # The bound is judged on rollout states (what the deployed policy sees); random inputs reach far outside
    # the calibrated ranges and are reported only.
    err, _, batch = worst({"rollout": errors["rollout"]})
    if not err <= bound:
        raise DeepcrlError(f"the {precision} model's actions differ from JAX by up to {err:.3g} on rollout states "
                           f"(batch {batch}), more than {flag} {bound:g}; nothing was written (export in float32, "
                           f"or raise {flag} if that error is acceptable).")
    o, g = inputs["rollout"]
    speed = {}
    for b in (1, 256):
        t32, tq = latency_us(fp32, o, g, b), latency_us(session, o, g, b)
        speed[str(b)] = {"fp32_us": round(t32, 2), f"{precision}_us": round(tq, 2), "speedup": round(t32 / tq, 3)}
    mean_err = float(np.mean([np.abs(session.run(None, _feed(o, g))[0] - reference["rollout"][256])]))
    return {"precision": precision, "max_abs_diff": err, "max_abs_diff_random": worst({"random": errors["random"]})[0], "mean_abs_diff_rollout": mean_err, "tolerance": bound,
            "parity": {precision: {n: {str(b): v for b, v in per.items()} for n, per in errors.items()}},
            "latency_vs_fp32": speed}


def export(cfg) -> dict[str, Any]:
    """Export `cfg.run` in `cfg.format`; nothing is written unless every check passes.

    Args:
        cfg: a `deepcrl.export.config.ExportConfig`.

    Returns:
        The report: path, format, size, export time, parity errors per input set and batch size, the
        quantised model's error and speed when asked for, and the metadata written.
    """
    out = check_out_path(Path(cfg.out), cfg.format)
    if cfg.format == "savedmodel":
        from deepcrl.export.savedmodel import export_savedmodel

        return export_savedmodel(cfg)
    data, report = build(cfg)
    if cfg.format == "triton":
        from deepcrl.export.triton import write_repository

        path = write_repository(out, cfg.model_name, data, report["metadata"], cfg.max_batch_size,
                                cfg.max_queue_delay_us)
        report.update(format="triton", path=str(path), repository=str(out), size_bytes=len(data))
        return report
    write_atomic(out, data)
    report.update(format="onnx", path=str(out), size_bytes=len(data))
    return report


def print_report(report: dict[str, Any]) -> None:
    """A short human summary of an export report."""
    from rich.console import Console

    console = Console(highlight=False)
    console.print(f"[bold green]exported[/] {report['kind']} ({report['env_id']}) -> {report['path']} "
                  f"({report.get('size_bytes', 0) / 1024:.1f} KiB, {report.get('precision', 'fp32')}, "
                  f"{report.get('converter', 'jax2onnx')} {report.get('export_seconds', 0):.1f} s)")
    fp32 = report.get("fp32_max_abs_diff", report["max_abs_diff"])
    per_input = next(iter(report.get("parity", {}).get("fp32", {}).values()), None)
    batches = list(per_input) if per_input else list(map(str, PARITY_BATCHES))
    console.print(f"fp32 parity vs JAX: max |diff| = {fp32:.2e} over random and rollout states at batch "
                  f"{', '.join(batches)}")
    if report.get("precision", "fp32") != "fp32":
        console.print(f"{report['precision']} action error vs JAX on rollout states: max {report['max_abs_diff']:.2e}, "
                      f"mean {report['mean_abs_diff_rollout']:.2e} (bound {report['tolerance']:g}); "
                      f"on random inputs: max {report['max_abs_diff_random']:.2e}")
    for batch, s in report.get("latency_vs_fp32", {}).items():
        prec = report["precision"]
        console.print(f"batch {batch}: fp32 {s['fp32_us']:.1f} us, {prec} {s[prec + '_us']:.1f} us "
                      f"(x{s['speedup']:.2f})")
