"""`deepcrl sweep`: a 2-cell grid writes its rows and figure, a re-run skips finished cells (a killed sweep
continues), unfinished cells resume, and bad input is one sentence before anything runs.

Each trained cell is a real `python -m deepcrl.cli train` process (~20 s of CPU each): two in the module.
"""

import json
import os

import pytest

from deepcrl.cli import main
from deepcrl.sweep.config import SweepConfig
from deepcrl.sweep.plots import group_rows
from deepcrl.sweep.runner import cell_state, plan, run_sweep, train_command, train_flags

PNG = b"\x89PNG\r\n\x1a\n"
# one training iteration of 8 envs x 25 steps, two SGD steps of batch 32, evaluated once at the end
TINY = "--num-envs 8 --unroll-length 25 --sgd-steps 2 --batch-size 32 --replay-capacity 50 --eval-episodes 8"


def _cfg(out, **kw):
    base = dict(env="point_maze", depths=(4,), widths=(16,), seeds=(0,), steps=200, out=out, train_args=TINY)
    return SweepConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def first_cell(tmp_path_factory):
    """A sweep 'killed' after its first cell: only seed 0 of the grid ran."""
    out = tmp_path_factory.mktemp("sweep") / "grid"
    result = run_sweep(_cfg(out))
    return out, result


@pytest.mark.slow  # uses the module's real sweep (training processes, ~50 s)
def test_the_first_cell_is_a_normal_train_run(first_cell):
    out, result = first_cell
    cell = out / "d4_w16_s0"
    assert {"manifest.json", "metrics.jsonl", "train.log", "cellinfo.json", "curves.png"} <= {
        p.name for p in cell.iterdir()}
    assert (cell / "train_state").is_dir()
    (row,) = result["rows"]
    assert row["status"] == "done" and row["ran"] and row["env_steps"] == 200 and row["error"] is None
    # width 16, point_maze sizes: actor towers in 4 -> 16 (+ 1 block of 4 Dense+LN) and two 16 -> 2 heads
    tower = lambda n_in: n_in * 16 + 16 + 2 * 16 + 4 * (16 * 16 + 16 + 2 * 16)  # noqa: E731
    assert row["params_actor"] == tower(4) + 2 * (16 * 2 + 2)
    assert row["params_critic"] == tower(4) + tower(2) + 2 * (16 * 64 + 64)
    assert 0.0 <= row["success"] <= 1.0 and row["wall_s"] > 0


@pytest.mark.slow  # uses the module's real sweep (training processes, ~50 s)
def test_a_rerun_skips_the_finished_cell_and_trains_the_rest(first_cell):
    out, _ = first_cell
    manifest = out / "d4_w16_s0" / "manifest.json"
    before = manifest.stat().st_mtime_ns
    lines = []
    result = run_sweep(_cfg(out, seeds=(0, 1), jobs=2, probe=True), log=lines.append)
    assert manifest.stat().st_mtime_ns == before  # not retrained
    assert "d4_w16_s0: done, skipped" in lines and "d4_w16_s1: training" in lines
    rows = json.loads((out / "sweep.json").read_text())["rows"]
    assert rows == json.loads(json.dumps(result["rows"]))
    assert [(r["seed"], r["ran"], r["status"], r["env_steps"]) for r in rows] == [(0, False, "done", 200),
                                                                             (1, True, "done", 200)]
    for r in rows:  # the probe ran on both, the skipped cell too
        assert -1.0 <= r["probe_spearman_geodesic"] <= 1.0 and -1.0 <= r["probe_spearman_euclidean"] <= 1.0
        assert open(r["probe_png"], "rb").read(8) == PNG
    assert rows[0]["params"] == rows[1]["params"] > 0
    (group,) = result["groups"]
    assert group["seeds"] == [0, 1] and group["success"]["n"] == 2
    assert (out / "sweep.png").read_bytes()[:8] == PNG


@pytest.mark.slow  # uses the module's real sweep (training processes, ~50 s)
def test_an_unfinished_cell_resumes_and_a_spent_budget_counts_as_done(first_cell):
    out, _ = first_cell
    (cell,) = plan(_cfg(out, steps=400))  # the cell reached 200 of 400 steps
    cfg = _cfg(out, steps=400, max_minutes=30.0)
    assert cell_state(cell, cfg) == "partial"
    cmd = train_command(cell, cfg, "partial")
    assert cmd[-len(TINY.split()) - 1] == "--resume" and cmd[cmd.index("--steps") + 1] == "400"
    spent = json.loads((out / "d4_w16_s0" / "metrics.jsonl").read_text().splitlines()[-1])["wall_s"]
    assert float(cmd[cmd.index("--max-minutes") + 1]) == pytest.approx(30.0 - spent / 60, rel=1e-3)
    assert cell_state(cell, _cfg(out, steps=400, max_minutes=spent / 120)) == "out_of_time"


@pytest.mark.slow  # uses the module's real sweep (training processes, ~50 s)
def test_dry_run_prints_each_cells_state_and_command(first_cell, capsys):
    out, _ = first_cell
    assert main(["sweep", "--env", "point_maze", "--depths", "4", "8", "--widths", "16", "--seeds", "0",
                 "--steps", "200", "--out", str(out), f"--train-args={TINY}", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "d4_w16_s0: done: (nothing to train)" in printed
    assert "d8_w16_s0: new: -m deepcrl.cli train --env point_maze --depth 8 --width 16" in printed
    assert not (out / "d8_w16_s0").exists()


def test_dry_run_json_is_one_object(tmp_path, capsys):
    assert main(["sweep", "--depths", "4", "8", "--widths", "16", "--seeds", "0", "--steps", "200",
                 "--out", str(tmp_path / "grid"), f"--train-args={TINY}", "--dry-run", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [(c["cell"], c["state"]) for c in result["cells"]] == [("d4_w16_s0", "new"), ("d8_w16_s0", "new")]
    assert result["cells"][1]["command"][:6] == ["-m", "deepcrl.cli", "train", "--env", "point_maze", "--depth"]


@pytest.mark.parametrize("args, message", [
    (["--depths", "4", "6"], "--depths must be multiples of 4 between 4 and 1024, got 6."),
    (["--env", "point_mase"], "unknown env id 'point_mase'; valid ids are: point_maze"),
    (["--train-args=--depth 8"], "--train-args may not set --depth: the sweep sets it per cell (--depths)."),
    (["--train-args=--batch-size 100000"], "--batch-size 100000 is larger than the replay buffer"),
    (["--env", "reacher", "--probe"], "the probe needs a maze of free cells (a point_maze env); reacher has"),
    (["--jobs", "0"], "--jobs must be at least 1, got 0."),
])
def test_bad_input_is_one_sentence_before_anything_runs(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["sweep", "--out", str(out), "--steps", "200", *args]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: ") and message in err and err.count(". ") == 0, err
    assert not out.exists()


@pytest.mark.slow  # uses the module's real sweep (training processes, ~50 s)
def test_a_cell_of_other_settings_is_refused(first_cell, capsys):
    out, _ = first_cell
    assert main(["sweep", "--env", "point_maze", "--depths", "4", "--widths", "16", "--seeds", "0",
                 "--out", str(out), "--train-args=--num-envs 8 --batch-size 16 --replay-capacity 50"]) == 2
    assert "d4_w16_s0 holds a run with batch size 32, not 16 as this sweep asks" in capsys.readouterr().err


def test_train_args_as_a_dict_and_the_seed_summary():
    assert train_flags({"batch_size": 512, "remat": True, "bf16": False, "critic_depth": None}) == [
        "--batch-size", "512", "--remat"]
    assert train_flags("--batch-size 512 --sgd-steps 32") == ["--batch-size", "512", "--sgd-steps", "32"]
    rows = [{"depth": 4, "width": 8, "seed": s, "params": 10, "success": v, "detour_success": None}
            for s, v in ((0, 0.5), (1, 1.0), (2, None))]
    (group,) = group_rows(rows)
    assert group["success"] == {"mean": 0.75, "std": 0.25, "min": 0.5, "max": 1.0, "n": 2}
    assert group["detour_success"] is None and group["seeds"] == [0, 1, 2]


def test_sweep_help_teaches(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("--depths", "--train-args", "--max-minutes", "--jobs", "--probe", "resumable", "sweep.json"):
        assert phrase in text, phrase


def test_children_import_this_checkout():
    import deepcrl
    from deepcrl.sweep.runner import _Runner

    root = os.path.dirname(os.path.dirname(os.path.abspath(deepcrl.__file__)))
    assert _Runner(_cfg("x"), print).env["PYTHONPATH"].split(os.pathsep)[0] == root


@pytest.mark.slow  # uses the module's real sweep (training processes, ~50 s)
def test_a_cell_still_trained_by_a_killed_sweeps_orphan_is_refused(first_cell, capsys):
    import subprocess
    import sys

    out, _ = first_cell
    cell = out / "d4_w16_s0"
    # stands in for an orphaned `deepcrl train --out CELL` (its command line names the cell)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(cell)])
    try:
        (cell / ".sweep.pid").write_text(f"{proc.pid}\n")
        assert main(["sweep", "--env", "point_maze", "--depths", "4", "--widths", "16", "--seeds", "0",
                     "--steps", "200", "--out", str(out), f"--train-args={TINY}"]) == 2
        assert f"is being trained by process {proc.pid}" in " ".join(capsys.readouterr().err.split())
    finally:
        proc.kill()
        proc.wait()
    assert main(["sweep", "--env", "point_maze", "--depths", "4", "--widths", "16", "--seeds", "0",
                 "--steps", "200", "--out", str(out), f"--train-args={TINY}", "--dry-run"]) == 0
    (cell / ".sweep.pid").unlink()
