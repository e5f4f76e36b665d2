"""JAX policy -> ONNX with jax2onnx, checked against JAX on random and rollout states before it is written.

The exported function is the artifact's own `JaxPolicy.apply_fn` with its parameters closed over, so the
file computes exactly what `deepcrl eval --ckpt` runs: the deterministic tanh action mapped onto the
action bounds. A scanned teacher (`jax.lax.scan` over stacked blocks) becomes one ONNX `Loop`, so the file
and the export time stay small at any depth.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from deepcrl.errors import ArtifactError, DeepcrlError

EXPORT_FORMAT_VERSION = 1
INPUT_NAMES = ("observation", "goal")
OUTPUT_NAME = "action"
BATCH_DIM = "batch"
PARITY_BATCHES = (1, 2, 7, 256)


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
    except Exception:  # noqa: BLE001 - an optimisation only
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
            [(BATCH_DIM, policy.obs_size), (BATCH_DIM, policy.goal_size)],
            model_name="deepcrl_policy",
            opset=opset,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
        )
    except Exception as exc:  # noqa: BLE001 - an unsupported primitive or opset; the user needs one sentence
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise DeepcrlError(f"jax2onnx cannot convert this {policy.manifest.kind}'s policy at opset {opset} "
                           f"({type(exc).__name__}: {first}).") from None
    if hoist_loops:
        hoist_loop_invariants(model)
    if fp16:
        model = to_float16(model)
    return model


def hoist_loop_invariants(model) -> int:
    """Stop passing unchanged tensors through `Loop` bodies as loop-carried state; returns how many.

    jax2onnx lowers `jax.lax.scan` over stacked block weights to a `Loop` whose carried state includes every
    stacked weight tensor, passed through unchanged (`Identity`). ONNX Runtime copies carried state on every
    iteration: for a depth-64, width-256 teacher that is 16 MB per block. A Loop body may read outer-scope
    values directly, so each such pass-through is replaced by a reference to the value it carries. The graph
    computes the same thing; the parity check that follows verifies it.
    """
    used_outside = {name for n in model.graph.node for name in _uses(n)} | {o.name for o in model.graph.output}
    hoisted = 0
    for loop in model.graph.node:
        if loop.op_type != "Loop":
            continue
        body = next(a.g for a in loop.attribute if a.name == "body")
        producer = {out: n for n in body.node for out in n.output}
        defined = set(producer) | {i.name for i in body.input} | {i.name for i in body.initializer}
        n_carried = len(loop.input) - 2
        drop = []
        for k in range(n_carried):
            carried_in, carried_out = body.input[k + 2].name, body.output[k + 1].name
            outer, final = loop.input[k + 2], loop.output[k]
            node = producer.get(carried_out)
            if (node is None or node.op_type != "Identity" or list(node.input) != [carried_in] or not outer
                    or final in used_outside or outer in defined):
                continue
            drop.append((k, node, carried_in, outer))
        for k, node, carried_in, outer in reversed(drop):
            body.node.remove(node)
            for n in body.node:
                _rename_input(n, carried_in, outer)
            del body.input[k + 2]
            del body.output[k + 1]
            del loop.input[k + 2]
            del loop.output[k]
            hoisted += 1
    kept = {o for n in model.graph.node for o in n.output}
    keep_info = [v for v in model.graph.value_info if v.name in kept]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep_info)
    return hoisted


def _uses(node) -> set[str]:
    names = set(node.input)
    for graph in _subgraphs(node):
        for n in graph.node:
            names |= _uses(n)
    return names


def _rename_input(node, old: str, new: str) -> None:
    for i, name in enumerate(node.input):
        if name == old:
            node.input[i] = new
    for graph in _subgraphs(node):
        for n in graph.node:
            _rename_input(n, old, new)


def _subgraphs(node):
    import onnx

    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def to_float16(model):
    """Float16 weights and compute with float32 inputs/outputs (ONNX Runtime's converter).

    The converter appends its input casts at the end of the node list, so the graph is re-sorted. It
    mistypes values inside `Loop` bodies, so scanned teachers are refused (export a student for GPU fp16).
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    if any(n.op_type in ("Loop", "Scan", "If") for n in model.graph.node):
        raise DeepcrlError("--fp16 does not support a scanned teacher (its blocks are an ONNX Loop, which "
                           "ONNX Runtime's float16 converter mistypes); export it in float32 or export a student.")
    model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    _topological_sort(model.graph)
    return model


def _topological_sort(graph) -> None:
    nodes = list(graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    order, done = [], set()

    def visit(i: int) -> None:
        stack = [(i, False)]
        while stack:
            j, expanded = stack.pop()
            if j in done:
                continue
            if expanded:
                done.add(j)
                order.append(nodes[j])
                continue
            stack.append((j, True))
            for name in reversed(nodes[j].input):
                k = producer.get(name)
                if k is not None and k not in done and k != j:
                    stack.append((k, False))

    for i in range(len(nodes)):
        visit(i)
    del graph.node[:]
    graph.node.extend(order)


def metadata_for(policy, extra: dict[str, Any]) -> dict[str, str]:
    """The `metadata_props` of an exported policy (all values are strings, per the contract)."""
    import deepcrl

    m = policy.manifest
    props = {
        "deepcrl_version": deepcrl.__version__,
        "format_version": str(EXPORT_FORMAT_VERSION),
        "kind": m.kind,
        "env_id": m.env_id,
        "obs_size": str(m.obs_size),
        "goal_size": str(m.goal_size),
        "action_size": str(m.action_size),
        "action_low": repr(float(m.action_low)),
        "action_high": repr(float(m.action_high)),
        "source_hash": m.checkpoint_hash,
        "source_step": str(m.step),
        "parent_hash": m.parent_hash or "",
        "network": json.dumps(m.network.get("actor", {}), sort_keys=True),
        "export_time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input_names": ",".join(INPUT_NAMES),
        "output_name": OUTPUT_NAME,
    }
    props.update({k: str(v) for k, v in extra.items()})
    return props


def set_metadata(model, props: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def rollout_states(policy, n: int = 256, seed: int = 0, envs_: int = 32, steps: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Observations and goals visited by the policy itself in its env (`envs_` episodes x `steps`).

    Parity on these matters more than on random inputs: they are what the robot will send.
    """
    import jax

    from deepcrl import envs

    env = envs.make(policy.manifest.env_id)
    spec = env.goal_spec
    apply_fn = policy.apply_fn

    @jax.jit
    def collect(params, key):
        state = jax.vmap(env.reset)(jax.random.split(key, envs_))

        def body(s, _):
            obs = s.obs[:, : spec.obs_size]
            goal = s.obs[:, spec.obs_size : spec.obs_size + spec.goal_size]
            s = jax.vmap(env.step)(s, apply_fn(params, obs, goal))
            return s, (obs, goal)

        return jax.lax.scan(body, state, None, steps)[1]

    obs, goal = jax.device_get(collect(policy.params, jax.random.PRNGKey(seed)))
    obs = np.asarray(obs, np.float32).reshape(-1, spec.obs_size)
    goal = np.asarray(goal, np.float32).reshape(-1, spec.goal_size)
    pick = np.random.default_rng(seed).choice(len(obs), size=n, replace=len(obs) < n)
    return obs[pick], goal[pick]


def parity_inputs(policy, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """256 random and 256 rollout (observation, goal) rows; the random ones span the rollout range and more."""
    rng = np.random.default_rng(seed)
    obs, goal = rollout_states(policy, 256, seed)
    scale = float(max(1.0, np.abs(obs).max(), np.abs(goal).max()))
    random = (rng.uniform(-scale, scale, (256, policy.obs_size)).astype(np.float32),
              rng.uniform(-scale, scale, (256, policy.goal_size)).astype(np.float32))
    return {"random": random, "rollout": (obs, goal)}


def jax_actions(policy, inputs: dict) -> dict[str, dict[int, np.ndarray]]:
    """Reference actions from the jitted JAX policy, per input set and batch size."""
    return {name: {b: policy(o[:b], g[:b]) for b in PARITY_BATCHES} for name, (o, g) in inputs.items()}


def compare(session, inputs: dict, reference: dict) -> dict[str, dict[int, float]]:
    """max |ONNX - JAX| per input set and batch size."""
    out = {}
    for name, (o, g) in inputs.items():
        out[name] = {}
        for b in PARITY_BATCHES:
            got = session.run([OUTPUT_NAME], {"observation": o[:b], "goal": g[:b]})[0]
            want = reference[name][b]
            if got.shape != want.shape:
                raise DeepcrlError(f"the exported model returned actions of shape {got.shape} at batch {b}, "
                                   f"expected {want.shape}; the model was not written.")
            out[name][b] = float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0
    return out


def worst(errors: dict[str, dict[int, float]]) -> tuple[float, str, int]:
    value, name, batch = max((v, n, b) for n, per in errors.items() for b, v in per.items())
    return value, name, batch


def session_for(model_bytes: bytes, threads: int = 1):
    from deepcrl.export.runtime import session_options

    import onnxruntime as ort

    return ort.InferenceSession(model_bytes, session_options(threads), providers=["CPUExecutionProvider"])


def latency_us(session, obs: np.ndarray, goal: np.ndarray, batch: int, seconds: float = 0.3) -> float:
    """Median wall time of one `session.run` at `batch` rows, in microseconds."""
    feed = {"observation": obs[:batch], "goal": goal[:batch]}
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
    parent = out.parent if fmt == "onnx" else out
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeepcrlError(f"cannot write to {out}: {exc.strerror or exc} ({parent}).") from None
    if not os.access(parent, os.W_OK):
        raise DeepcrlError(f"cannot write to {out}: {parent} is not writable.")
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside the target, then rename: a reader never sees half a model."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DeepcrlError(f"cannot write {path}: {exc.strerror or exc}.") from None


def load_source(ckpt: Path):
    """The artifact's `JaxPolicy`, with a clear error for anything that is not an exportable artifact."""
    from deepcrl.policy import load_policy

    try:
        return load_policy(ckpt, deploy=True)
    except DeepcrlError:
        raise
    except Exception as exc:  # a manifest that validates but whose network the builder rejects
        raise ArtifactError(f"{ckpt} cannot be rebuilt for export: its network config is incompatible "
                            f"with this deepcrl ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).") from None


def build(cfg) -> tuple[bytes, dict[str, Any]]:
    """Export, check and (optionally) quantise; returns the final model bytes and the report.

    Raises:
        DeepcrlError: the checkpoint cannot be loaded, or a parity / quantisation bound is exceeded
            (nothing is written then).
    """
    import onnx

    if cfg.quantize == "int8" and cfg.fp16:
        raise DeepcrlError("--quantize int8 and --fp16 exclude each other; choose one.")
    policy = load_source(cfg.ckpt)
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
        "kind": policy.manifest.kind, "env_id": policy.manifest.env_id, "source": str(cfg.ckpt),
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
    set_metadata(final, metadata_for(policy, extra))
    try:
        onnx.checker.check_model(final, full_check=True)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types
        raise DeepcrlError(f"the exported model fails onnx.checker ({str(exc).splitlines()[0]}); nothing was written.") from None
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
    mean_err = float(np.mean([np.abs(session.run(None, {"observation": o, "goal": g})[0] - reference["rollout"][256])]))
    return {"precision": precision, "max_abs_diff": err, "max_abs_diff_random": worst({"random": errors["random"]})[0], "mean_abs_diff_rollout": mean_err, "tolerance": bound,
            "parity": {precision: {n: {str(b): v for b, v in per.items()} for n, per in errors.items()}},
            "latency_vs_fp32": speed}


def export(cfg) -> dict[str, Any]:
    """Export `cfg.ckpt` in `cfg.format`; nothing is written unless every check passes.

    Args:
        cfg: a `deepcrl.export.config.ExportConfig`.

    Returns:
        The report: path, format, size, export time, parity errors per input set and batch size, the
        quantised model's error and speed when asked for, and the metadata written.
    """
    for flag, value in (("--max-diff", cfg.max_diff), ("--max-int8-error", cfg.max_int8_error),
                        ("--max-fp16-error", cfg.max_fp16_error)):
        if not value > 0:
            raise DeepcrlError(f"{flag} must be a positive number (got {value}).")
    out = check_out_path(Path(cfg.out), cfg.format)
    if cfg.format == "savedmodel":
        from deepcrl.export.savedmodel import export_savedmodel

        return export_savedmodel(cfg)
    data, report = build(cfg)
    if cfg.format == "triton":
        from deepcrl.export.triton import write_repository

        path = write_repository(out, cfg.name, data, report["metadata"], cfg.max_batch_size, cfg.max_queue_delay_us)
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
                  f"jax2onnx {report.get('export_seconds', 0):.1f} s)")
    fp32 = report.get("fp32_max_abs_diff", report["max_abs_diff"])
    console.print(f"fp32 parity vs JAX: max |diff| = {fp32:.2e} over random and rollout states at batch "
                  f"{', '.join(map(str, PARITY_BATCHES))}")
    if report.get("precision", "fp32") != "fp32":
        console.print(f"{report['precision']} action error vs JAX on rollout states: max {report['max_abs_diff']:.2e}, "
                      f"mean {report['mean_abs_diff_rollout']:.2e} (bound {report['tolerance']:g}); "
                      f"on random inputs: max {report['max_abs_diff_random']:.2e}")
    for batch, s in report.get("latency_vs_fp32", {}).items():
        prec = report["precision"]
        console.print(f"batch {batch}: fp32 {s['fp32_us']:.1f} us, {prec} {s[prec + '_us']:.1f} us "
                      f"(x{s['speedup']:.2f})")
