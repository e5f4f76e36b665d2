"""The env registry, `deepcrl envs` and the one-sentence unknown-id error (exit code 2)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from deepcrl import cli, envs
from deepcrl.errors import DeepcrlError, UnknownEnvError

ALL_IDS = {"point_maze", "point_maze_open", "point_maze_big", "reacher", "ant", "ant_u_maze", "ant_big_maze",
           "humanoid"}


def test_every_env_is_registered():
    assert set(envs.env_ids()) >= ALL_IDS


@pytest.mark.parametrize("typo, closest", [("point_mze", "point_maze"), ("ant_u_maz", "ant_u_maze"),
                                           ("humanoid2", "humanoid"), ("reachr", "reacher")])
def test_unknown_id_lists_the_closest_id_first(typo, closest):
    with pytest.raises(UnknownEnvError) as info:
        envs.make(typo)
    message = str(info.value)
    assert isinstance(info.value, DeepcrlError)
    assert message.startswith(f"unknown env id {typo!r}; valid ids are: {closest},")
    listed = message.split("valid ids are: ")[1].rstrip(".").split(", ")
    assert set(listed) == set(envs.env_ids())  # every valid id is named, each once
    assert len(listed) == len(set(listed))


def test_envs_verb_prints_one_whole_line_per_env_off_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)  # captured stdout is not a terminal: nothing may fold
    assert cli.main(["envs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for row in envs.describe():
        line = next(line for line in lines if f" {row['id']} " in line)
        for value in (row["description"], row["backend"], str(row["episode_length"]), str(row["obs_size"])):
            assert value in line, (value, line)

    assert cli.main(["envs", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) >= ALL_IDS
    assert (rows["point_maze"]["obs_size"], rows["point_maze"]["goal_size"], rows["point_maze"]["action_size"]) \
        == (2, 2, 2)
    assert (rows["ant"]["obs_size"], rows["ant"]["goal_size"], rows["ant"]["action_size"]) == (29, 2, 8)
    assert rows["reacher"]["episode_length"] == 50 and rows["humanoid"]["episode_length"] == 1000
    assert rows["ant_big_maze"]["backend"] == "mjx" and rows["point_maze"]["backend"] == "jax"


@dataclasses.dataclass(frozen=True)
class _EnvVerb:
    """A verb taking an env id, as train/eval do."""

    env: str = "point_maze"
    """Environment id."""



def _run_env_verb(cfg: _EnvVerb) -> int:
    envs.check_env_id(cfg.env)
    return 0


def test_unknown_env_id_in_a_verb_exits_2_with_one_sentence(capsys, monkeypatch):
    monkeypatch.setitem(cli.VERBS, "probe", (f"{__name__}:_EnvVerb", f"{__name__}:_run_env_verb"))
    assert cli.main(["probe", "--env", "point_maze"]) == 0
    assert cli.main(["probe", "--env", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown env id 'nope'; valid ids are:" in err and "Traceback" not in err
    assert err.count(".") >= 1 and err.strip().endswith(".")


def test_train_verb_rejects_unknown_env_id(capsys, tmp_path):
    assert cli.main(["train", "--env", "nope", "--out", str(tmp_path / "run")]) == 2
    assert "unknown env id 'nope'" in capsys.readouterr().err
