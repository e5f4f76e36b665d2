"""A critic -> ONNX: the two encoders phi(s, a) and psi(g) as separately callable outputs. A teacher's CRL
critic, or a student's distance head (``deepcrl distill --represent`` trains shallow encoders to match the
teacher's representation and energy; the file has the same contract, and parity is checked the same way).

The critic scores f(s, a, g) = -||phi(s, a) - psi(g)||_2 (the InfoNCE energy). Its negation is a learned
*distance*: small when g is reached soon from s after taking a. The file has three inputs with independent
batch sizes, ``observation`` [batch_s, obs], ``action`` [batch_s, act] and ``goal`` [batch_g, goal], and two
outputs, ``phi`` [batch_s, repr] and ``psi`` [batch_g, repr]. ONNX Runtime needs every input fed, so a caller
of the whole file that wants one encoder feeds zero rows to the other; `OnnxCritic` instead cuts the file into
its two sub-graphs at load (one session each), so `phi` never runs the goal tower. Goals can be encoded once
and cached; a distance is then one subtraction and norm per goal.

Checked against JAX like the policy: max |ONNX - JAX| over random and env rows at several batch sizes
(phi and psi at different batch sizes in one call), relative to the encoders' scale (max |value|, at least 1,
so the tolerance means what it means for an action in [-1, 1]); nothing is written when it exceeds it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from deepcrl.errors import ArtifactError, DeepcrlError

from deepcrl.plan.critic import (ACTION, ACTION_RULE, CRITIC_INPUTS, CRITIC_OUTPUTS, DISTANCE,  # noqa: F401
                                  DISTANCE_MEANING, GOAL, OBSERVATION, PART, PHI, PSI, OnnxCritic)

PARITY_BATCHES = (1, 2, 7, 256)


UNROLL_MAX_BLOCKS = 16
"""Critics with at most this many residual blocks (depth 64) are exported unrolled (`scan=False`: the same
parameters, no ONNX ``Loop``): ONNX Runtime then folds each block's weight slice into a constant and runs no
sub-graph per block, which is most of a one-row phi call's time. Deeper critics keep the ``Loop``."""


def load_critic(run_dir: str | Path, unroll: bool = False):
    """(manifest, deploy-form critic module) of a run directory: a teacher's CRL critic, or the distance head of a
    student distilled with ``--represent`` (its shallow encoders phi_s, psi_s, trained to match the teacher's).
    `unroll`: a teacher's blocks unrolled (no scan) when it has at most `UNROLL_MAX_BLOCKS` blocks.

    Raises:
        ArtifactError: the artifact has no critic (a student distilled without ``--represent``).
    """
    import pkgutil

    from deepcrl import artifacts
    from deepcrl.policy import CRITIC_BUILDERS, DEPLOY_OVERRIDES, restore_module

    manifest, params = artifacts.load(run_dir)
    if "critic" not in params or "critic" not in manifest.network:
        hint = ("distil it with --represent to give it one" if manifest.kind == "student"
                else "use a teacher run directory")
        raise ArtifactError(f"{run_dir} holds no critic (no distance head phi/psi), so it gives no distances; "
                            f"{hint}.")
    config = {**manifest.network["critic"], **DEPLOY_OVERRIDES.get(manifest.kind, {})}
    if unroll and manifest.kind == "teacher" and int(config.get("depth", 4)) // 4 <= UNROLL_MAX_BLOCKS:
        config["scan"] = False
    try:
        critic = pkgutil.resolve_name(CRITIC_BUILDERS[manifest.kind])(config)
    except DeepcrlError:
        raise
    except Exception as exc:  # noqa: BLE001 - a manifest the builder rejects
        raise ArtifactError(f"{run_dir}'s critic cannot be rebuilt ({type(exc).__name__}: {exc}).") from exc
    return manifest, restore_module(critic, params["critic"], run_dir)


def _encoders(critic):
    """Pure JAX functions phi(params, s, a) and psi(params, g) of a critic module, and its parameters."""
    from flax import nnx

    graphdef, params = nnx.split(critic)

    def phi(p, s, a):
        return nnx.merge(graphdef, p).phi(s, a)

    def psi(p, g):
        return nnx.merge(graphdef, p).psi(g)

    return phi, psi, params


def to_onnx_model(manifest, critic, opset: int = 21):
    """The critic as an `onnx.ModelProto` (inputs observation/action/goal, outputs phi/psi; see module doc)."""
    from jax2onnx import to_onnx

    from deepcrl.export.graph import hoist_loop_invariants
    from deepcrl.export.onnx import _load_plugins

    _load_plugins()
    phi, psi, params = _encoders(critic)

    def encode(observation, action, goal):
        return phi(params, observation, action), psi(params, goal)

    try:
        model = to_onnx(encode, [("batch_s", manifest.obs_size), ("batch_s", manifest.action_size),
                                 ("batch_g", manifest.goal_size)],
                        model_name="deepcrl_critic", opset=opset, input_names=list(CRITIC_INPUTS),
                        output_names=list(CRITIC_OUTPUTS))
    except Exception as exc:  # noqa: BLE001 - an unsupported primitive; one sentence
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise DeepcrlError(f"jax2onnx cannot convert this critic at opset {opset} ({type(exc).__name__}: "
                           f"{first}).") from exc
    hoist_loop_invariants(model)
    return model


def _parity_rows(manifest, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """256 random rows and 256 env rows (reset states, their goals, random actions in the bounds)."""
    import jax

    from deepcrl import envs

    rng = np.random.default_rng(seed)
    env = envs.make(manifest.env_id)
    spec = env.goal_spec
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(seed), 256))
    obs, goal = (np.asarray(x, np.float32) for x in envs.split_obs(spec, state.obs))
    act = rng.uniform(manifest.action_low, manifest.action_high, (256, manifest.action_size)).astype(np.float32)
    scale = float(max(1.0, np.abs(obs).max(), np.abs(goal).max()))
    rand = (rng.uniform(-scale, scale, obs.shape).astype(np.float32),
            rng.uniform(-1, 1, act.shape).astype(np.float32),
            rng.uniform(-scale, scale, goal.shape).astype(np.float32))
    return {"random": rand, "rollout": (obs, act, goal)}


def build(run_dir: Path, opset: int = 21, max_diff: float = 1e-5, seed: int = 0,
          unroll: bool = True) -> tuple[bytes, dict[str, Any]]:
    """Export and parity-check a run directory's critic; returns (model bytes, report). Nothing is written.
    `unroll=False` keeps the blocks' ``Loop`` at any depth (what benchmarks/plan_latency.py compares)."""
    import jax
    import onnx

    from deepcrl.export import contract
    from deepcrl.export.onnx import session_for, set_metadata

    manifest, critic = load_critic(run_dir, unroll=unroll)
    t0 = time.perf_counter()
    model = to_onnx_model(manifest, critic, opset)
    export_s = time.perf_counter() - t0
    data = model.SerializeToString()
    session = session_for(data)
    phi, psi, params = _encoders(critic)
    phi_j, psi_j = jax.jit(phi), jax.jit(psi)
    errors: dict[str, dict[str, float]] = {}
    for name, (o, a, g) in _parity_rows(manifest, seed).items():
        errors[name] = {}
        for b in PARITY_BATCHES:
            # phi and psi at different batch sizes in one call: the two batch axes are independent
            gb = max(1, b // 2)
            got_phi, got_psi = session.run(list(CRITIC_OUTPUTS), {OBSERVATION: o[:b], ACTION: a[:b], GOAL: g[:gb]})
            want_phi, want_psi = np.asarray(phi_j(params, o[:b], a[:b])), np.asarray(psi_j(params, g[:gb]))
            if got_phi.shape != want_phi.shape or got_psi.shape != want_psi.shape:
                raise DeepcrlError(f"the exported critic returned shapes {got_phi.shape}/{got_psi.shape} at batch "
                                   f"{b}/{gb}, expected {want_phi.shape}/{want_psi.shape}; nothing was written.")
            # relative to the encoders' scale (max |value|, at least 1): an action lies in [-1, 1], a
            # representation reaches a few units, where float32 rounding alone is a few 1e-6
            scale = max(1.0, float(np.abs(want_phi).max()), float(np.abs(want_psi).max()))
            errors[name][str(b)] = float(max(np.abs(got_phi - want_phi).max(),
                                             np.abs(got_psi - want_psi).max()) / scale)
    diff = max(v for per in errors.values() for v in per.values())
    if not diff <= max_diff:
        raise DeepcrlError(f"the ONNX critic disagrees with JAX: max |ONNX - JAX| / scale = {diff:.3g} (tolerance "
                           f"{max_diff:g}); nothing was written.")
    net = manifest.network["critic"]
    props = contract.metadata(
        kind=manifest.kind, env_id=manifest.env_id, obs_size=manifest.obs_size, goal_size=manifest.goal_size,
        action_size=manifest.action_size, action_low=manifest.action_low, action_high=manifest.action_high,
        source={contract.SOURCE_HASH: manifest.checkpoint_hash, "source_step": manifest.step,
                "network": json.dumps(net, sort_keys=True)},
        extra={PART: "critic", "repr_size": net.get("repr_size", 64), DISTANCE: DISTANCE_MEANING,
               ACTION_RULE: "zeros", "input_names": ",".join(CRITIC_INPUTS), "output_name": ",".join(CRITIC_OUTPUTS),
               "precision": "fp32", "parity_max_rel_diff": f"{diff:.3e}", "parity_tolerance": f"{max_diff:g}",
               "parity_batches": ",".join(map(str, PARITY_BATCHES)), "opset": str(opset)})
    set_metadata(model, props)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise DeepcrlError(f"the exported critic fails onnx.checker ({str(exc).splitlines()[0]}); nothing was "
                           "written.") from exc
    report = {"kind": manifest.kind, "part": "critic", "env_id": manifest.env_id, "source": str(run_dir),
              "export_seconds": round(export_s, 3), "tolerance": max_diff, "parity": {"fp32": errors},
              "fp32_max_abs_diff": diff, "max_abs_diff": diff, "precision": "fp32", "metadata": props}
    return model.SerializeToString(), report


def export_critic(cfg) -> dict[str, Any]:
    """`deepcrl export --part critic`: write the checked critic file to `cfg.out` (format onnx only)."""
    from deepcrl.export.onnx import check_out_path, write_atomic

    if cfg.format != "onnx" or cfg.quantize != "none" or cfg.fp16:
        raise DeepcrlError("--part critic writes a float32 .onnx file only (no --format triton/savedmodel, "
                           "--quantize or --fp16).")
    if not cfg.max_diff > 0:
        raise DeepcrlError(f"--max-diff must be a positive number (got {cfg.max_diff}).")
    out = check_out_path(Path(cfg.out), "onnx")
    data, report = build(Path(cfg.run), cfg.opset, cfg.max_diff, cfg.seed)
    write_atomic(out, data)
    report.update(format="onnx", path=str(out), size_bytes=len(data))
    return report
