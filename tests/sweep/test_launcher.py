"""`deepcrl sweep --launcher slurm|local`: cells as a submitit job array (here submitit's local executor, the
SLURM code path without a cluster), gathered into the same sweep.json; a re-run skips finished cells."""

import json

import pytest

from deepcrl.cli import main
from deepcrl.errors import DeepcrlError
from deepcrl.sweep.config import SweepConfig
from deepcrl.sweep.launch import slurm_parameters
from deepcrl.sweep.runner import run_sweep

pytest.importorskip("submitit")

TINY = "--num-envs 8 --unroll-length 25 --sgd-steps 2 --batch-size 32 --replay-capacity 50 --eval-episodes 8"


@pytest.mark.slow
def test_local_executor_trains_the_grid_and_a_rerun_skips_it(tmp_path):
    out = tmp_path / "grid"
    cfg = SweepConfig(env="point_maze", depths=(4,), widths=(16,), seeds=(0, 1), steps=200, out=out,
                      train_args=TINY, launcher="local", jobs=2)
    lines: list[str] = []
    result = run_sweep(cfg, log=lines.append)
    rows = {r["seed"]: r for r in result["rows"]}
    assert set(rows) == {0, 1}
    for r in rows.values():
        assert r["status"] == "done" and r["ran"] and r["env_steps"] == 200 and r["success"] is not None
    assert json.loads((out / "sweep.json").read_text())["rows"] == result["rows"]
    assert any("submitted 2 cells" in line for line in lines)
    assert list((out / "submitit").glob("*_log.out"))  # submitit's own logs of the tasks
    assert "submitit job" in (out / "d4_w16_s0" / "train.log").read_text()
    again = run_sweep(cfg, log=lines.append)
    assert [r["ran"] for r in again["rows"]] == [False, False]


def test_slurm_args_parse_and_bad_ones_are_one_sentence(capsys):
    assert slurm_parameters("account=rl --qos=high") == {"account": "rl", "qos": "high"}
    with pytest.raises(DeepcrlError, match="KEY=VALUE"):
        slurm_parameters("account")
    assert main(["sweep", "--slurm-partition", "gpu", "--dry-run"]) == 2
    assert "--launcher slurm" in capsys.readouterr().err
