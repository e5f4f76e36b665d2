"""The artifact format: round trip, and one clear error for each way loading can fail."""

import json

import numpy as np
import pytest

from deepcrl import artifacts
from deepcrl.errors import ArtifactError


def _manifest(**kw):
    base = dict(kind="teacher", env_id="point_maze", obs_size=2, goal_size=2, action_size=2,
                network={"actor": {"depth": 4}})
    return artifacts.Manifest(**{**base, **kw})


PARAMS = {"actor": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float32)},
          "critic": {"layers": {"0": {"kernel": np.ones((4, 4), np.float32)}}}}


@pytest.fixture()
def saved(tmp_path):
    run = tmp_path / "run"
    written = artifacts.save(run, _manifest(step=123, metrics={"success": 0.5}), PARAMS)
    return run, written


def test_round_trip_restores_params_and_manifest(saved):
    run, written = saved
    manifest, params = artifacts.load(run, kind="teacher")
    assert manifest == written
    assert manifest.step == 123 and manifest.metrics == {"success": 0.5}
    assert len(manifest.checkpoint_hash) == 64 and manifest.created and "jax" in manifest.versions
    np.testing.assert_array_equal(params["actor"]["w"], PARAMS["actor"]["w"])
    np.testing.assert_array_equal(params["critic"]["layers"]["0"]["kernel"], np.ones((4, 4)))


def test_saving_again_replaces_the_checkpoint(saved):
    run, first = saved
    new = {"actor": {"w": np.full((2, 3), 7.0, np.float32), "b": np.ones(3, np.float32)}}
    second = artifacts.save(run, _manifest(step=200), new)
    assert second.checkpoint_hash != first.checkpoint_hash
    _, params = artifacts.load(run)
    np.testing.assert_array_equal(params["actor"]["w"], 7.0)
    assert not (run / "checkpoint.tmp").exists() and not (run / "checkpoint.old").exists()


def test_missing_directory(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        artifacts.load(tmp_path / "nope")


def test_directory_without_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        artifacts.load(tmp_path)


def test_corrupt_manifest_json(saved):
    run, _ = saved
    (run / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        artifacts.load(run)


def test_manifest_with_bad_field(saved):
    run, _ = saved
    raw = json.loads((run / "manifest.json").read_text())
    raw["obs_size"] = -3
    (run / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="obs_size"):
        artifacts.load(run)


def test_wrong_kind(saved):
    run, _ = saved
    with pytest.raises(ArtifactError, match="holds a teacher, but a student is needed"):
        artifacts.load(run, kind="student")


def test_newer_format(saved):
    run, _ = saved
    raw = json.loads((run / "manifest.json").read_text())
    raw["format_version"] = artifacts.FORMAT_VERSION + 1
    (run / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="newer than this deepcrl reads"):
        artifacts.load(run)


def test_tampered_checkpoint_fails_hash(saved):
    run, _ = saved
    victim = max((p for p in (run / "checkpoint").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match the hash"):
        artifacts.load(run)


def test_missing_checkpoint(saved):
    run, _ = saved
    import shutil

    shutil.rmtree(run / "checkpoint")
    with pytest.raises(ArtifactError, match="checkpoint directory is missing"):
        artifacts.load(run)


def test_unwritable_run_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ArtifactError, match="cannot create the run directory"):
        artifacts.save(blocker / "run", _manifest(), PARAMS)


def test_unrestorable_checkpoint_names_the_problem_and_keeps_the_cause(saved):
    run, _ = saved
    for path in (run / "checkpoint").rglob("*"):  # the arrays' files are gone; the directory still exists
        if path.is_file() and "METADATA" not in path.name.upper():
            path.unlink()
    with pytest.raises(ArtifactError, match="checkpoint cannot be restored") as info:
        artifacts.load(run, verify=False)
    cause = info.value.__cause__
    assert cause is not None and type(cause).__name__ in str(info.value)
    assert str(cause).strip().splitlines()[0][:60] in str(info.value)


def test_corrupt_manifest_keeps_the_parser_error_as_cause(saved):
    run, _ = saved
    (run / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON") as info:
        artifacts.read_manifest(run)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


def test_load_networks_is_the_one_loader(tmp_path):
    """`policy.load_networks` rebuilds actor (and critic when asked for) from disk; a missing part is one
    sentence naming who needs it; `open_policy` picks exactly one source."""
    from deepcrl.errors import DeepcrlError
    from deepcrl.policy import init_artifact, load_networks, load_policy, open_policy

    init_artifact(tmp_path / "s", "student", "point_maze", {"hidden": [8]})
    nets = load_networks(tmp_path / "s", "student")
    assert nets.manifest.kind == "student" and nets.critic is None
    obs, goal = np.full((3, 2), 0.2, np.float32), np.full((3, 2), -0.4, np.float32)
    np.testing.assert_array_equal(load_policy(tmp_path / "s")(obs, goal),
                                  np.asarray(nets.actor.act(obs, goal)))  # action bounds are [-1, 1] here
    with pytest.raises(ArtifactError, match=r"holds no critic parameters, which the probe needs\.$"):
        load_networks(tmp_path / "s", critic="the probe needs")
    with pytest.raises(ArtifactError, match="holds a student, but a teacher is needed here"):
        load_networks(tmp_path / "s", "teacher")
    opened = open_policy(run=tmp_path / "s")
    assert (opened.env_id, opened.source) == ("point_maze", f"student {tmp_path / 's'}")
    with pytest.raises(DeepcrlError, match="exactly one of --run DIR, --model FILE.onnx or --url URL"):
        open_policy(run=tmp_path / "s", model=tmp_path / "p.onnx")
