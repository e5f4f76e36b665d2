"""The sweep's summary table (seed mean and spread per depth and width) and its figure."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

# Per-cell numbers summarised over seeds in sweep.json's "groups".
SUMMARISED = ("success", "detour_success", "time_at_goal", "env_steps", "wall_s", "probe_spearman_geodesic",
              "probe_spearman_euclidean")


def _stats(values: list) -> dict | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    return {"mean": mean, "std": std, "min": min(vals), "max": max(vals), "n": len(vals)}


def group_rows(rows: list[dict]) -> list[dict]:
    """One entry per (depth, width): seeds, params and, for each of `SUMMARISED`, mean / std / min / max / n
    over the seeds that have it (None when none has)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["depth"], row["width"])].append(row)
    out = []
    for (depth, width), members in sorted(groups.items()):
        entry = {"depth": depth, "width": width, "seeds": [r["seed"] for r in members],
                 "params": next((r["params"] for r in members if r.get("params")), None)}
        entry.update({key: _stats([r.get(key) for r in members]) for key in SUMMARISED})
        out.append(entry)
    return out


def _curve_mean(histories: list[list[dict]], key: str) -> tuple[list, list, list]:
    """Seed-mean eval curve: (mean env steps, mean wall s, mean `key`) at each evaluation index."""
    evals = [[r for r in h if r.get("eval")] for h in histories]
    n = min((len(e) for e in evals), default=0)
    steps, walls, vals = [], [], []
    for i in range(n):
        got = [e[i]["eval"].get(key) for e in evals]
        got = [g for g in got if g is not None]
        if got:
            steps.append(sum(e[i]["env_steps"] for e in evals) / len(evals))
            walls.append(sum(e[i]["wall_s"] for e in evals) / len(evals))
            vals.append(sum(got) / len(got))
    return steps, walls, vals


def plot_sweep(rows: list[dict], histories: list[list[dict]], path: str | Path, title: str = "") -> Path:
    """Write the sweep's figure (atomically).

    Panels: success and detour success vs depth (seed mean, bars = min..max over seeds, one line per width);
    the same vs parameter count (lines join equal widths; dotted lines join equal depths, so depth and width
    compare at equal parameters); eval curves vs env steps and vs wall time (seed means, one line per depth
    and width); time at goal vs depth; and the probe's Spearman correlations vs depth when the sweep ran it.

    Args:
        rows: sweep.json rows (one per cell).
        histories: each row's metrics.jsonl rows, in the same order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepcrl._io import atomic_path

    groups = group_rows(rows)
    widths = sorted({g["width"] for g in groups})
    depths = sorted({g["depth"] for g in groups})
    wcolor = {w: plt.cm.tab10(i % 10) for i, w in enumerate(widths)}
    fig, axes = plt.subplots(2, 3, figsize=(17, 9))

    def by_width(ax, key, x_of, dashed_key=None, label=""):
        for w in widths:
            gs = [g for g in groups if g["width"] == w and g[key] and x_of(g) is not None]
            for k, style, fill in ((key, "-", True), (dashed_key, "--", False)):
                pts = [(x_of(g), g[k]) for g in gs if k and g[k]]
                if not pts:
                    continue
                xs = [p[0] for p in pts]
                ys = [p[1]["mean"] for p in pts]
                err = [[p[1]["mean"] - p[1]["min"] for p in pts], [p[1]["max"] - p[1]["mean"] for p in pts]]
                ax.errorbar(xs, ys, yerr=err, linestyle=style, marker="o", capsize=3, color=wcolor[w],
                            markerfacecolor=wcolor[w] if fill else "white",
                            label=f"width {w}: {(label if k == key and label else k).replace('_', ' ')}")

    ax = axes[0, 0]
    by_width(ax, "success", lambda g: g["depth"], "detour_success")
    ax.set(xscale="log", xlabel="depth", ylabel="eval success", ylim=(-0.02, 1.02),
           title="success (solid) and detour success (dashed) vs depth")
    ax.set_xticks(depths, [str(d) for d in depths])

    ax = axes[0, 1]
    by_width(ax, "success", lambda g: g["params"], "detour_success")
    if len(widths) > 1:  # join equal depths across widths: depth vs width at equal parameters
        for d in depths:
            pts = sorted((g["params"], g["success"]["mean"]) for g in groups
                         if g["depth"] == d and g["params"] and g["success"])
            if len(pts) > 1:
                ax.plot(*zip(*pts), ":", color="0.5")
    for g in groups:
        if g["params"] and g["success"]:
            ax.annotate(f"d{g['depth']}", (g["params"], g["success"]["mean"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    ax.set(xscale="log", xlabel="parameters (actor + critic)", ylabel="eval success", ylim=(-0.02, 1.02),
           title="vs parameters (dotted: equal depth)")

    for ax, xkey, xlabel in ((axes[0, 2], 0, "env steps"), (axes[1, 0], 1, "wall s")):
        for i, g in enumerate(groups):
            hs = [h for r, h in zip(rows, histories) if (r["depth"], r["width"]) == (g["depth"], g["width"])]
            color = plt.cm.viridis(i / max(1, len(groups) - 1))
            for key, style in (("success", "-"), ("detour_success", "--")):
                curve = _curve_mean(hs, key)
                if curve[2]:
                    ax.plot(curve[xkey], curve[2], style, color=color,
                            label=f"d{g['depth']} w{g['width']}" if key == "success" else None)
        ax.set(xlabel=xlabel, ylabel="eval success (seed mean)", ylim=(-0.02, 1.02),
               title=f"success (solid), detour (dashed) vs {xlabel}")

    ax = axes[1, 1]
    by_width(ax, "time_at_goal", lambda g: g["depth"], label="time at goal")
    ax.set(xscale="log", xlabel="depth", ylabel="steps within the success radius", title="time at goal vs depth")
    ax.set_xticks(depths, [str(d) for d in depths])

    ax = axes[1, 2]
    if any(g["probe_spearman_geodesic"] for g in groups):
        by_width(ax, "probe_spearman_geodesic", lambda g: g["depth"], "probe_spearman_euclidean")
        ax.set(xscale="log", xlabel="depth", ylabel="Spearman with -energy", ylim=(-1.02, 1.02),
               title="probe: geodesic (solid) vs straight line (dashed)")
        ax.set_xticks(depths, [str(d) for d in depths])
    else:
        ax.text(0.5, 0.5, "no probe (run the sweep with --probe on a point maze)", ha="center", va="center")
        ax.set_axis_off()

    for a in axes.flat:
        if a.has_data():
            a.grid(alpha=0.3)
            a.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return path
