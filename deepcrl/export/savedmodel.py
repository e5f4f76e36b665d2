"""TensorFlow SavedModel export through jax2tf (the `tf` extra).

jax2tf -> SavedModel works with current JAX (native serialisation: the policy is stored as StableHLO in an
``XlaCallModule`` op; checked with jax 0.10.2 and tensorflow-cpu 2.21 for students and deep teachers, whose
``lax.scan`` over the blocks converts as is); jax2tf -> tf2onnx does not, which is why ONNX goes through
jax2onnx. The SavedModel has one signature, ``serving_default``, with inputs ``observation`` / ``goal``
[batch, n] float32 and output ``action``, is checked against JAX on the same random and rollout inputs as the
ONNX export (plus an odd batch, 17), and carries the deepcrl metadata in ``assets.extra/deepcrl_metadata.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from deepcrl.errors import DeepcrlError
from deepcrl.contract import ACTION, GOAL, OBSERVATION, metadata_for
from deepcrl.export.source import PARITY_BATCHES, load_source, parity_inputs, worst

TF_MISSING = ("--format savedmodel needs TensorFlow, which is not installed; install it with "
              "`pip install deepcrl[tf]`.")
ODD_BATCH = 17  # a batch size the ONNX check does not use: the SavedModel's batch dimension is symbolic


def _import_tf():
    try:
        import tensorflow as tf
        from jax.experimental import jax2tf
    except ModuleNotFoundError as exc:
        raise DeepcrlError(TF_MISSING) from exc
    return tf, jax2tf


def export_savedmodel(cfg) -> dict[str, Any]:
    """Write a SavedModel directory at `cfg.out` after a parity check; returns the report.

    Raises:
        DeepcrlError: TensorFlow is missing, the checkpoint cannot be loaded, or parity fails.
    """
    tf, jax2tf = _import_tf()

    policy = load_source(cfg.run)
    params, apply_fn = policy.params, policy.apply_fn
    t0 = time.perf_counter()
    converted = jax2tf.convert(lambda o, g: apply_fn(params, o, g), polymorphic_shapes=["(b, _)", "(b, _)"],
                               native_serialization=True)
    module = tf.Module()
    module.act = tf.function(
        lambda observation, goal: {ACTION: converted(observation, goal)}, autograph=False,
        input_signature=[tf.TensorSpec([None, policy.obs_size], tf.float32, name=OBSERVATION),
                         tf.TensorSpec([None, policy.goal_size], tf.float32, name=GOAL)])
    out = Path(cfg.out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.act})
    export_s = time.perf_counter() - t0

    inputs = parity_inputs(policy, cfg.seed)
    batches = sorted({*PARITY_BATCHES, ODD_BATCH})
    serving = tf.saved_model.load(str(tmp)).signatures["serving_default"]
    errors = {}
    for name, (o, g) in inputs.items():
        errors[name] = {}
        for b in batches:
            got = serving(**{OBSERVATION: tf.constant(o[:b]), GOAL: tf.constant(g[:b])})[ACTION].numpy()
            want = policy(o[:b], g[:b])
            if got.shape != want.shape:
                shutil.rmtree(tmp, ignore_errors=True)
                raise DeepcrlError(f"the SavedModel returned actions of shape {got.shape} at batch {b}, expected "
                                   f"{want.shape}; nothing was written.")
            errors[name][b] = float(np.max(np.abs(got.astype(np.float64) - want)))
    diff, where, batch = worst(errors)
    if not diff <= cfg.max_diff:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DeepcrlError(f"the SavedModel disagrees with JAX: max |TF - JAX| = {diff:.3g} on {where} inputs at "
                           f"batch {batch} (tolerance {cfg.max_diff:g}); nothing was written.")
    metadata = metadata_for(policy, {"precision": "fp32", "parity_max_abs_diff": f"{diff:.3e}",
                                     "parity_tolerance": f"{cfg.max_diff:g}", "format": "savedmodel"})
    (tmp / "assets.extra").mkdir(exist_ok=True)
    (tmp / "assets.extra" / "deepcrl_metadata.json").write_text(json.dumps(metadata, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"kind": policy.manifest.kind, "env_id": policy.manifest.env_id, "format": "savedmodel",
            "converter": "jax2tf", "path": str(out), "size_bytes": size, "export_seconds": round(export_s, 3), "precision": "fp32",
            "max_abs_diff": diff, "tolerance": cfg.max_diff,
            "parity": {"fp32": {n: {str(b): v for b, v in per.items()} for n, per in errors.items()}},
            "metadata": metadata}
