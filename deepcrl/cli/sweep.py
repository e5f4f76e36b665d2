"""`deepcrl sweep`: train the grid (resumable, bounded, N cells at a time) and print one row per cell."""

from __future__ import annotations

from deepcrl.sweep.config import SweepConfig


def run(cfg: SweepConfig) -> int:
    import jax
    from rich.markup import escape

    # This process only plans and collects (importing the Brax envs starts JAX's backend): keep it off the
    # GPU, whose memory belongs to the cells' own processes (they do not inherit this setting).
    jax.config.update("jax_platforms", "cpu")
    from deepcrl.sweep.runner import plan, run_sweep, training_units

    from deepcrl.cli import console, json_output, print_json

    err = console(stderr=True, highlight=False)
    if cfg.dry_run:
        out = console(highlight=False)
        cells = []
        planned = plan(cfg)
        units, state_fn, command_fn = training_units(planned, cfg)
        # with --seeds-together each cell shows its (depth, width) group's state and `--seeds` command
        for cell, unit in ((c, u) for u in units for c in getattr(u, "cells", (u,))):
            state = state_fn(unit, cfg)
            cmd = None if state in ("done", "out_of_time") else command_fn(unit, cfg, state)[1:]
            cells.append({"cell": cell.name, "state": state, "command": cmd})
            if not cfg.json:
                text = "(nothing to train)" if cmd is None else " ".join(cmd)
                out.print(f"{cell.name}: {state}: {escape(text)}", soft_wrap=True)
        if cfg.json:
            print_json({"env": cfg.env, "cells": cells})
        return 0
    with json_output(cfg.json):
        result = run_sweep(cfg, log=lambda line: err.print(f"[dim]sweep[/] {escape(line)}"))
    if cfg.json:
        print_json(result)
    else:
        _print_table(result)
    return 0 if all(r["status"] != "failed" for r in result["rows"]) else 1


def _print_table(result: dict) -> None:
    from rich.table import Table

    rows = result["rows"]
    probe = any("probe_spearman_geodesic" in r for r in rows)
    table = Table(title=f"sweep on {result['env']} ({len(rows)} cells)")
    for name in ("depth", "width", "seed", "params", "env steps", "wall s", "success", "detour", "time at goal",
                 *(("probe geo", "probe line") if probe else ()), "status"):
        table.add_column(name, justify="left" if name == "status" else "right")

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    for r in rows:
        table.add_row(str(r["depth"]), str(r["width"]), str(r["seed"]), num(r["params"], ","),
                      num(r["env_steps"], ","), num(r["wall_s"], ".0f"), num(r["success"], ".3f"),
                      num(r["detour_success"], ".3f"), num(r["time_at_goal"], ".1f"),
                      *((num(r.get("probe_spearman_geodesic"), ".3f"), num(r.get("probe_spearman_euclidean"), ".3f"))
                        if probe else ()),
                      r["status"] + (f" ({r['error']})" if r.get("error") else ""))
    from deepcrl.cli import console

    out = console()
    out.print(table)
    out.print(f"wrote {result['json']} and {result['png']}", highlight=False)
