"""`deepcrl sweep --seeds-together`: the seeds of a (depth, width) pair train as one `deepcrl train --seeds`
process into OUT/d{depth}_w{width}/seed_{seed}/, gathered into the same sweep.json rows; a re-run skips the
pair; seeds in states one `--seeds` run cannot continue from are one sentence before anything trains."""

import json

import pytest

from deepcrl.cli import main
from deepcrl.sweep.config import SweepConfig
from deepcrl.sweep.runner import plan, run_sweep, training_units

TINY = "--num-envs 8 --unroll-length 25 --sgd-steps 2 --batch-size 32 --replay-capacity 50 --eval-episodes 8"


def _cfg(out, **kw):
    base = dict(env="point_maze", depths=(4,), widths=(16,), seeds=(0, 1), steps=200, out=out, train_args=TINY,
                seeds_together=True)
    return SweepConfig(**{**base, **kw})


def test_cells_of_a_pair_form_one_group_with_one_seeds_command(tmp_path):
    cfg = _cfg(tmp_path / "grid", depths=(4, 8), max_minutes=2.0)
    cells = plan(cfg)
    assert [(c.name, c.dir.relative_to(cfg.out).as_posix()) for c in cells] == [
        ("d4_w16_s0", "d4_w16/seed_0"), ("d4_w16_s1", "d4_w16/seed_1"),
        ("d8_w16_s0", "d8_w16/seed_0"), ("d8_w16_s1", "d8_w16/seed_1")]
    groups, state_fn, command_fn = training_units(cells, cfg)
    assert [(g.name, g.seeds) for g in groups] == [("d4_w16", [0, 1]), ("d8_w16", [0, 1])]
    assert state_fn(groups[1], cfg) == "new"
    cmd = command_fn(groups[1], cfg, "new")
    assert cmd[cmd.index("--seeds"):cmd.index("--seeds") + 3] == ["--seeds", "0", "1"] and "--seed" not in cmd
    assert cmd[cmd.index("--out") + 1] == str(cfg.out / "d8_w16")
    assert cmd[cmd.index("--depth") + 1] == "8" and cmd[cmd.index("--max-minutes") + 1] == "2"
    assert cmd[-len(TINY.split()):] == TINY.split()


def test_seeds_that_cannot_continue_together_are_one_sentence(tmp_path, capsys):
    out = tmp_path / "grid"
    (out / "d4_w16" / "seed_1" / "train_state").mkdir(parents=True)  # seed 1 has a checkpoint, seed 0 none
    assert main(["sweep", "--depths", "4", "--widths", "16", "--seeds", "0", "1", "--steps", "200", "--out",
                 str(out), f"--train-args={TINY}", "--seeds-together"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot train together (seed 0: new, seed 1: partial)" in err and err.count(". ") == 0, err
    assert not (out / "d4_w16" / "seed_0").exists()


def test_dry_run_shows_the_groups_command_for_each_cell(tmp_path, capsys):
    assert main(["sweep", "--depths", "4", "--widths", "16", "--seeds", "0", "2", "--steps", "200", "--out",
                 str(tmp_path / "grid"), f"--train-args={TINY}", "--seeds-together", "--dry-run", "--json"]) == 0
    cells = json.loads(capsys.readouterr().out)["cells"]
    assert [(c["cell"], c["state"]) for c in cells] == [("d4_w16_s0", "new"), ("d4_w16_s2", "new")]
    assert cells[0]["command"] == cells[1]["command"] and "--seeds" in cells[0]["command"]
    assert not (tmp_path / "grid").exists()


@pytest.mark.slow  # one `deepcrl train --seeds 0 1` process (~1 min of CPU compiling the vmapped program)
def test_a_pair_trains_as_one_process_and_a_rerun_skips_it(tmp_path):
    out = tmp_path / "grid"
    lines: list[str] = []
    result = run_sweep(_cfg(out), log=lines.append)
    assert "d4_w16: training" in lines and not any(line.startswith("d4_w16_s") for line in lines)
    log = (out / "d4_w16" / "train.log").read_text()
    assert log.count("$ ") == 1 and "--seeds 0 1" in log
    rows = result["rows"]
    assert [(r["cell"], r["seed"], r["ran"], r["status"], r["env_steps"]) for r in rows] == [
        ("d4_w16_s0", 0, True, "done", 200), ("d4_w16_s1", 1, True, "done", 200)]
    for r in rows:
        manifest = json.loads((out / "d4_w16" / f"seed_{r['seed']}" / "manifest.json").read_text())
        assert manifest["network"]["train"]["seed"] == r["seed"] and manifest["network"]["train"]["seeds"] is None
        assert 0.0 <= r["success"] <= 1.0 and r["params"] > 0
    assert rows[0]["params"] == rows[1]["params"]
    (group,) = result["groups"]
    assert group["seeds"] == [0, 1] and group["success"]["n"] == 2
    assert json.loads((out / "sweep.json").read_text())["rows"] == json.loads(json.dumps(rows))
    again = run_sweep(_cfg(out), log=lines.append)
    assert [r["ran"] for r in again["rows"]] == [False, False] and "d4_w16: done, skipped" in lines
