"""Training curves: success (all pairs and detour pairs) and losses against environment steps."""

from __future__ import annotations

from pathlib import Path

from deepcrl._io import atomic_path


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Write a PNG of success and losses over env steps.

    Args:
        history: metrics.jsonl rows (``env_steps``, losses, and ``eval`` dicts on evaluation rows).
        path: PNG file to write.
        title: figure title.
    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["env_steps"] for r in history]
    evals = [(r["env_steps"], r["eval"]) for r in history if r.get("eval")]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    ax = axes[0]
    for key, label in (("success", "all pairs"), ("detour_success", "detour pairs"),
                       ("direct_success", "direct pairs")):
        pts = [(s, e[key]) for s, e in evals if e.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set(xlabel="env steps", ylabel="eval success", ylim=(-0.02, 1.02), title="success")
    ax.legend(loc="lower right")
    ax = axes[1]
    for key in ("critic_loss", "actor_loss"):
        ax.plot(steps, [r.get(key) for r in history], label=key.replace("_", " "))
    ax.set(xlabel="env steps", title="losses")
    ax.legend()
    ax = axes[2]
    ax.plot(steps, [r.get("alpha") for r in history], label="alpha")
    ax.plot(steps, [r.get("entropy") for r in history], label="entropy")
    ax.plot(steps, [r.get("critic_accuracy") for r in history], label="critic accuracy")
    ax.set(xlabel="env steps", title="temperature and entropy")
    ax.legend()
    _plot_norms(axes[3], history)
    for a in axes:
        a.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:  # a reader never sees half a PNG
            fig.savefig(tmp, dpi=80)
    finally:
        plt.close(fig)
    return path


def _plot_norms(ax, history: list[dict]) -> None:
    """Per-block norms over env steps: the residual stream after the last block (solid) and the gradient of
    the first and last blocks (dashed, dotted), for each tower; a stream that explodes or a gradient that
    vanishes shows here before the losses go wrong."""
    rows = [(r["env_steps"], r["norms"]) for r in history if r.get("norms")]
    if not rows:
        ax.set_axis_off()
        return
    steps = [s for s, _ in rows]
    for i, tower in enumerate(("critic_sa", "critic_g", "actor")):
        color = f"C{i}"
        if f"{tower}_stream" in rows[0][1]:
            ax.plot(steps, [n[f"{tower}_stream"][-1] for _, n in rows], color=color, label=f"{tower} stream")
            ax.plot(steps, [n[f"{tower}_grad"][0] for _, n in rows], "--", color=color, label=f"{tower} grad, block 1")
            ax.plot(steps, [n[f"{tower}_grad"][-1] for _, n in rows], ":", color=color, label="last block")
    ax.set(xlabel="env steps", yscale="log", title="per-block norms (last block's stream; grads)")
    ax.legend(fontsize=7)
