"""Depth benchmark of the teacher networks: compile time, step time and memory from depth 4 to 1024.

One "step" is the very function training runs ``sgd_steps`` times per iteration
(`deepcrl.teacher.update.update`): a critic InfoNCE gradient step, an actor gradient step through the critic
(with ``actor_random_goal_frac`` of its goals drawn from other rows), an alpha step, and three Adam updates,
on a synthetic batch (the env does not matter for this benchmark, only the network shapes do). Each configuration (depth x scanned/unrolled x
remat) is jitted ahead of time, so compile time, the first call and the steady step time are measured apart.

Memory is XLA's own account of the compiled step (`compiled.memory_analysis()`): the bytes of arguments,
outputs and temporaries (activations kept for the backward pass live in the temporaries, which is what remat
shrinks). It is exact for the program and does not depend on what else runs on the machine.

Unrolled networks (a Python loop over the blocks, the reference's form) compile in time that grows with
depth; a depth whose predicted unrolled compile time exceeds ``unrolled_budget_s`` is skipped and recorded
as such, so the run stays within minutes.
"""

from __future__ import annotations

import gc
import resource
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from deepcrl.bench.common import machine_facts, median_time, write_result
from deepcrl.teacher import losses, networks
from deepcrl.teacher.update import Hyper, Nets, init_learner, update

SHARED_MACHINE = ("2-core CPU shared with several other jobs running at the same time: absolute times are "
                  "inflated and noisy; compare the ratios measured within this run.")


def _num_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def measure(depth: int, width: int, batch_size: int, *, scan: bool, remat: bool, dtype: str = "float32",
            obs_size: int = 29, goal_size: int = 2, action_size: int = 8, max_reps: int = 10,
            rep_budget_s: float = 5.0, actor_random_goal_frac: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """Build, compile and time one configuration. Returns a flat dict of numbers (seconds, bytes)."""
    cfg = dict(obs_size=obs_size, goal_size=goal_size, action_size=action_size, depth=depth, width=width,
               remat=remat, dtype=dtype, scan=scan)
    t0 = time.perf_counter()
    nets, actor_p, critic_p = Nets.split(networks.actor_from_config(cfg, seed=seed),
                                         networks.critic_from_config({**cfg, "repr_size": 64}, seed=seed + 1))
    hyper = Hyper(target_entropy=losses.default_target_entropy(action_size),
                  actor_random_goal_frac=actor_random_goal_frac)
    state = init_learner(actor_p, critic_p, learning_rate=3e-4)
    rng = np.random.default_rng(seed)
    batch = tuple(jnp.asarray(rng.normal(size=(batch_size, n)), jnp.float32)
                  for n in (obs_size, action_size, goal_size))
    key = jax.random.key(seed)
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0

    def training_update(learner, batch, key):
        return update(nets, hyper, learner, batch, key)

    step = jax.jit(training_update, donate_argnums=0)
    t0 = time.perf_counter()
    lowered = step.lower(state, batch, key)
    lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0

    mem = compiled.memory_analysis()
    memory = {}
    if mem is not None:
        memory = {f"{k}_bytes": int(getattr(mem, f"{k}_size_in_bytes", 0))
                  for k in ("argument", "output", "alias", "temp", "generated_code")}
        memory["peak_bytes"] = (memory["argument_bytes"] + memory["output_bytes"] - memory["alias_bytes"]
                                + memory["temp_bytes"])

    carry = {"state": state}

    def one_step():
        carry["state"], carry["metrics"] = compiled(carry["state"], batch, key)
        jax.block_until_ready(carry["metrics"])

    first_step_s, _ = median_time(one_step, reps=1, warmup=0)
    # At least 2 timed steps; more (up to max_reps) while they fit in rep_budget_s.
    reps = max(2, min(max_reps, int(rep_budget_s / max(first_step_s, 1e-9))))
    step_s, times = median_time(one_step, reps=reps, warmup=0)
    state, metrics = carry["state"], carry["metrics"]
    finite = bool(all(np.isfinite(float(v)) for v in metrics.values()))
    actor_p, critic_p = state.actor, state.critic
    result = {
        "depth": depth, "width": width, "batch_size": batch_size, "scan": scan, "remat": remat, "dtype": dtype,
        "actor_params": _num_params(actor_p), "critic_params": _num_params(critic_p),
        "init_s": init_s, "lower_s": lower_s, "compile_s": compile_s, "first_step_s": first_step_s,
        "step_s": step_s, "step_reps": len(times), "finite": finite, **memory,
        "process_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    del state, carry, compiled, lowered, step
    gc.collect()
    return result


def run(depths: tuple[int, ...] = (4, 16, 64, 256, 1024), width: int = 256, batch_size: int = 256,
        remat: tuple[bool, ...] = (False, True), unrolled: bool = True, unrolled_budget_s: float = 180.0,
        dtype: str = "float32", max_reps: int = 10, actor_random_goal_frac: float = 0.0,
        out: str | Path = "benchmarks/results/teacher_depth.json", log=print) -> dict[str, Any]:
    """Run the sweep, write JSON (+ PNG beside it) and return the results.

    Args:
        depths: network depths (multiples of 4, 4..1024), for actor and critic alike.
        width, batch_size: hidden width and batch (256, 256 as the reference).
        remat: remat settings to try for every depth.
        unrolled: also time the unrolled networks (same weights, Python loop over the blocks; remat off).
        unrolled_budget_s: skip an unrolled depth whose compile time, extrapolated linearly in depth from
            the previous one, would exceed this.
        actor_random_goal_frac: fraction of the actor's goals drawn from other rows (as in training).
        out: JSON path; the plot goes to the same path with ``.png``.
    """
    for d in depths:  # fail on a bad depth before anything is compiled
        networks.validate_config(dict(obs_size=1, goal_size=1, action_size=1, depth=d, width=width))
    facts = {**machine_facts(), "shared_machine": SHARED_MACHINE}
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    started = time.perf_counter()
    modes = [(True, r) for r in remat] + ([(False, False)] if unrolled else [])
    last_unrolled: dict[bool, dict] = {}
    # Throw-away warm-up: the first compile in a process pays one-time costs that would inflate depth 4.
    measure(4, 16, 8, scan=True, remat=False, dtype=dtype, max_reps=2)
    for depth in sorted(depths):
        for scan, rm in modes:
            if not scan and rm in last_unrolled:
                prev = last_unrolled[rm]
                predicted = (prev["lower_s"] + prev["compile_s"]) * depth / prev["depth"]
                if predicted > unrolled_budget_s:
                    skipped.append({"depth": depth, "scan": False, "remat": rm, "predicted_compile_s": predicted,
                                    "reason": f"predicted compile {predicted:.0f} s > budget {unrolled_budget_s:.0f} s"})
                    log(f"depth {depth:5d} unrolled remat={rm}: skipped (predicted compile {predicted:.0f} s)")
                    continue
            r = measure(depth, width, batch_size, scan=scan, remat=rm, dtype=dtype, max_reps=max_reps,
                        actor_random_goal_frac=actor_random_goal_frac)
            rows.append(r)
            if not scan:
                last_unrolled[rm] = r
            log(f"depth {depth:5d} {'scan    ' if scan else 'unrolled'} remat={str(rm):5s} "
                f"compile {r['lower_s'] + r['compile_s']:7.2f} s  step {r['step_s'] * 1e3:9.1f} ms  "
                f"peak {r.get('peak_bytes', 0) / 2**20:8.0f} MiB (temp {r.get('temp_bytes', 0) / 2**20:7.0f})")
    results = {"benchmark": "teacher_depth", "machine": facts,
               "setup": {"width": width, "batch_size": batch_size, "dtype": dtype, "obs_size": 29, "goal_size": 2,
                         "action_size": 8, "actor_random_goal_frac": actor_random_goal_frac,
                         "step": "deepcrl.teacher.update.update: critic + actor + alpha gradient step with "
                                 "3 Adam updates",
                         "compile": "lower_s + compile_s of the jitted step (ahead of time)",
                         "memory": "XLA memory_analysis of the compiled step; peak = arguments + outputs - "
                                   "aliased + temporaries"},
               "rows": rows, "skipped": skipped, "summary": summarize(rows),
               "wall_s": time.perf_counter() - started}
    out = write_result(out, results)
    plot(results, out.with_suffix(".png"))
    return results


def _find(rows, depth, scan, remat):
    return next((r for r in rows if (r["depth"], r["scan"], r["remat"]) == (depth, scan, remat)), None)


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Ratios that carry the claims: compile(1024) / compile(16), unrolled / scanned, remat memory."""
    compile_total = lambda r: r["lower_s"] + r["compile_s"]  # noqa: E731
    out: dict[str, Any] = {}
    depths = sorted({r["depth"] for r in rows})
    for rm in (False, True):
        lo, hi = _find(rows, 16, True, rm), _find(rows, max(depths), True, rm)
        if lo and hi and hi is not lo:
            key = f"scan_compile_ratio_{hi['depth']}_vs_16{'_remat' if rm else ''}"
            out[key] = compile_total(hi) / compile_total(lo)
    if "scan_compile_ratio_1024_vs_16" in out:
        out["target_compile_1024_within_2x_of_16"] = out["scan_compile_ratio_1024_vs_16"] <= 2.0
    for d in depths:
        s, u = _find(rows, d, True, False), _find(rows, d, False, False)
        if s and u:
            out[f"unrolled_over_scan_compile_depth_{d}"] = compile_total(u) / compile_total(s)
            out[f"unrolled_over_scan_step_depth_{d}"] = u["step_s"] / s["step_s"]
        s_r = _find(rows, d, True, True)
        if s and s_r and s.get("temp_bytes") and s_r.get("temp_bytes"):
            out[f"remat_over_plain_temp_bytes_depth_{d}"] = s_r["temp_bytes"] / s["temp_bytes"]
            out[f"remat_over_plain_step_depth_{d}"] = s_r["step_s"] / s["step_s"]
    return out


def plot(results: dict, path: Path) -> None:
    """Compile time, step time and peak memory against depth (log-log), one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    panels = [("compile (s)", lambda r: r["lower_s"] + r["compile_s"]), ("step (s)", lambda r: r["step_s"]),
              ("peak memory (MiB)", lambda r: r.get("peak_bytes", 0) / 2**20),
              ("temporaries, i.e. activations (MiB)", lambda r: r.get("temp_bytes", 0) / 2**20)]
    for ax, (label, value) in zip(axes, panels):
        for scan in (True, False):
            for rm in (False, True):
                sel = sorted((r for r in rows if r["scan"] == scan and r["remat"] == rm), key=lambda r: r["depth"])
                if sel:
                    ax.plot([r["depth"] for r in sel], [value(r) for r in sel], "o-" if scan else "s--",
                            label=f"{'scan' if scan else 'unrolled'}{' + remat' if rm else ''}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("depth (Dense layers in the residual blocks)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    s = results["setup"]
    fig.suptitle(f"teacher critic+actor step, width {s['width']}, batch {s['batch_size']}, "
                 f"{results['machine']['backend']} ({results['machine']['cpu_count']} shared cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
