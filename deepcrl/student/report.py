"""What a distillation report measures beside success: size, cost and latency of each policy, and the curves."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deepcrl.policy import JaxPolicy
from deepcrl.student.networks import matmul_flops, param_count


def single_action_latency_us(policy: JaxPolicy, calls: int = 200, budget_s: float = 5.0) -> float:
    """Median wall time of one jitted single-sample action (batch 1) in microseconds."""
    fn = jax.jit(policy.apply_fn)
    obs = jnp.zeros((1, policy.obs_size), jnp.float32)
    goal = jnp.zeros((1, policy.goal_size), jnp.float32)
    fn(policy.params, obs, goal).block_until_ready()
    times, start = [], time.perf_counter()
    for _ in range(calls):
        t0 = time.perf_counter()
        fn(policy.params, obs, goal).block_until_ready()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s and len(times) >= 20:
            break
    return float(np.median(times) * 1e6)


def describe(policy: JaxPolicy, module: nnx.Module, result, extra: dict | None = None) -> dict[str, Any]:
    """Parameters, FLOPs per action, single-action latency and evaluation of one policy, for the report."""
    return {"params": param_count(module), "flops_per_action": matmul_flops(module),
            "latency_us": single_action_latency_us(policy), "eval": result.as_dict(), **(extra or {})}


def ratio(a: float, b: float) -> float | None:
    """a / b, or None when b is 0."""
    return float(a / b) if b else None


def plot_curves(path: Path, records: list[dict], rounds: list[dict], teacher_success: float,
                random_success: float, initial_error: float) -> None:
    """Loss and held-out action error per step, and student success per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    steps = [r["step"] for r in records]
    axes[0].plot(steps, [r["loss"] for r in records], label="total")
    for key in ("action_mse", "repr_mse", "energy_nce", "feature_mse", "action_kl"):
        if key in records[0]:
            axes[0].plot(steps, [r[key] for r in records], label=key, alpha=0.8)
    axes[0].set(yscale="log", xlabel="gradient step", title="training losses")
    axes[0].legend(fontsize=7)
    axes[1].plot([0] + steps, [initial_error] + [r["heldout_action_mse"] for r in records])
    axes[1].set(yscale="log", xlabel="gradient step", title="held-out action MSE vs teacher")
    if rounds and "student_success" in rounds[0]:
        axes[2].plot([r["step"] for r in rounds], [r["student_success"] for r in rounds], "o-", label="student")
    axes[2].axhline(teacher_success, color="k", ls="--", label="teacher")
    axes[2].axhline(random_success, color="r", ls=":", label="random")
    axes[2].set(ylim=(0, 1.02), xlabel="gradient step", title="success rate")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
