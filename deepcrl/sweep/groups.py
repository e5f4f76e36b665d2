"""`deepcrl sweep --seeds-together`: the seeds of each (depth, width) pair train as one `deepcrl train --seeds`.

Cells that differ only in their seed then run as one process and one vmapped program
(`deepcrl.teacher.seeds`), which writes each seed's run directory as a single-seed run would. The group trains
into OUT/d{depth}_w{width}/ and its cells are that directory's seed_{seed}/ run directories, so everything the
sweep reads per cell (manifest, metrics, probe, sweep.json row) stays the same. A group is the unit that trains,
resumes and is skipped: the states of its cells decide what it does (`group_state`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from deepcrl.errors import DeepcrlError

_DONE = ("done", "out_of_time")


@dataclasses.dataclass(frozen=True)
class SeedGroup:
    """The cells of one (depth, width) pair, trained by one `deepcrl train --seeds` process."""

    depth: int
    width: int
    cells: tuple
    """The group's `deepcrl.sweep.runner.Cell`s, in seed order."""
    dir: Path
    """OUT/d{depth}_w{width}: the `--out` of the group's train command (train.log and the pid file go here)."""

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def seeds(self) -> list[int]:
        return [cell.seed for cell in self.cells]


def group_dir(out: Path, depth: int, width: int) -> Path:
    return Path(out) / f"d{depth}_w{width}"


def seed_cell_dir(out: Path, depth: int, width: int, seed: int) -> Path:
    from deepcrl.teacher.seeds import SEED_DIR

    return group_dir(out, depth, width) / SEED_DIR.format(seed)


def make_groups(cells: list, out: Path) -> list[SeedGroup]:
    """One group per (depth, width), in the cells' order."""
    by_pair: dict[tuple[int, int], list] = {}
    for cell in cells:
        by_pair.setdefault((cell.depth, cell.width), []).append(cell)
    return [SeedGroup(d, w, tuple(cs), group_dir(out, d, w)) for (d, w), cs in by_pair.items()]


def group_state(group: SeedGroup, cfg, cell_state: Callable) -> str:
    """What the group's process does: "new", "partial" (resume all seeds), or "done"/"out_of_time" (skip).

    Raises:
        DeepcrlError: its cells are in states one `--seeds` run cannot continue from (e.g. some finished, some
            not: a seed run alone, or a group with seeds added later).
    """
    states = [cell_state(cell, cfg) for cell in group.cells]
    if all(s in _DONE for s in states):
        return "out_of_time" if "out_of_time" in states else "done"
    if len(set(states)) == 1:
        return states[0]
    detail = ", ".join(f"seed {c.seed}: {s.replace('_', ' ')}" for c, s in zip(group.cells, states))
    raise DeepcrlError(f"the seeds of {group.dir} cannot train together ({detail}); give --seeds that are all "
                       "new or all unfinished, drop --seeds-together, or remove the group's directory.")


def group_command(group: SeedGroup, cfg, state: str, train_command: Callable, spent_s: Callable) -> list[str]:
    """The group's `deepcrl train --seeds ...` command: a cell's command (`train_command`) with --seeds for --seed
    and the group's --out (the remaining --max-minutes: the budget less the least any seed has spent)."""
    cmd = train_command(group.cells[0], cfg, state)
    i = cmd.index("--seed")
    cmd[i:i + 2] = ["--seeds", *map(str, group.seeds)]
    cmd[cmd.index("--out") + 1] = str(group.dir)
    if cfg.max_minutes is not None:  # the seeds train in lockstep; the least spent one decides
        spent = min(spent_s(c) for c in group.cells) / 60 if state == "partial" else 0.0
        cmd[cmd.index("--max-minutes") + 1] = f"{max(cfg.max_minutes - spent, 0.05):.4g}"
    return cmd


def expand(groups: list[SeedGroup], outcomes: dict[str, dict]) -> dict[str, dict]:
    """Each cell's outcome from its group's."""
    return {cell.name: dict(outcomes[g.name]) for g in groups for cell in g.cells}
