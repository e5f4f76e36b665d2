"""`deepcrl import scaling-crl`: checkpoints in the paper's exact pickle format -> deepcrl teachers with the same
actions and critic energies as the reference's forward pass (a numpy oracle), and one-sentence refusals."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest

import reference_format as ref
from deepcrl.cli import main

OBS, GOAL, ACT = 10, 3, 2  # the reference's reacher: 10 state numbers, 3-D goal, 2 actions


@pytest.fixture(scope="module")
def reacher_run(tmp_path_factory):
    """A reference reacher run directory (actor depth 8 x 32, critic depth 4 x 24) and its parameters."""
    args = ref.Args()
    ckpt = ref.reference_checkpoint(args, OBS, GOAL, ACT)
    run = ref.write_run(tmp_path_factory.mktemp("ref") / "reacher_1_20250101-000000", args, ckpt)
    return run, args, ckpt


@pytest.fixture(scope="module")
def imported(reacher_run, tmp_path_factory):
    run, _, _ = reacher_run
    out = tmp_path_factory.mktemp("imported") / "teacher"
    assert main(["import", "scaling-crl", str(run), "--out", str(out), "--json"]) == 0
    return out


def _inputs(n=64, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 1, (n, OBS)).astype(np.float32), rng.normal(0, 0.2, (n, GOAL)).astype(np.float32),
            rng.uniform(-1, 1, (n, ACT)).astype(np.float32))


def test_pickle_is_the_reference_format(reacher_run):
    """The helper writes what jax 0.4.23 + numpy 1.26 wrote: jax's rebuilder around numpy 1.x's."""
    run, _, _ = reacher_run
    raw = (run / "final.pkl").read_bytes()
    assert b"_reconstruct_array" in raw and b"numpy.core.multiarray" in raw and b"numpy._core" not in raw
    assert b"__main__" in (run / "args.pkl").read_bytes()


def test_manifest_records_the_source(imported, reacher_run):
    from deepcrl import artifacts

    run, args, _ = reacher_run
    m = artifacts.read_manifest(imported, "teacher")
    assert (m.env_id, m.obs_size, m.goal_size, m.action_size) == ("reacher_ref", OBS, GOAL, ACT)
    assert (m.network["actor"]["depth"], m.network["actor"]["width"]) == (8, 32)
    assert (m.network["critic"]["depth"], m.network["critic"]["width"], m.network["critic"]["repr_size"]) == (4, 24, 64)
    src = m.network["source"]
    assert src["format"] == "scaling-crl" and src["checkpoint"] == "final.pkl"
    assert src["reference_env_id"] == "reacher" and src["args"]["obs_dim"] == 10
    assert src["args"]["num_prefill_actor_steps"] == 17.0  # a numpy float64 in args.pkl, a float here
    import hashlib

    assert src["checkpoint_sha256"] == hashlib.sha256((run / "final.pkl").read_bytes()).hexdigest()
    assert m.step == args.total_env_steps and m.metrics["log_alpha"] == pytest.approx(-1.25)


def test_actions_match_the_reference_forward_pass(imported, reacher_run):
    from deepcrl.policy import load_policy

    _, args, (_, actor, _) = reacher_run
    s, g, _ = _inputs()
    want, _ = ref.actor_forward(actor, args.actor_depth, s, g)
    got = load_policy(imported)(s, g)
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(want).max() > 0.1  # the oracle's actions are not trivially zero


def test_log_std_and_energies_match(imported, reacher_run):
    from deepcrl import artifacts
    from deepcrl.policy import build_actor, restore_module
    from deepcrl.teacher.networks import critic_from_config

    _, args, (_, actor, critic) = reacher_run
    m, params = artifacts.load(imported, "teacher")
    s, g, a = _inputs()
    _, want_log_std = ref.actor_forward(actor, args.actor_depth, s, g)
    module = restore_module(build_actor("teacher", m.network["actor"]), params["actor"], imported)
    _, log_std = module(np.concatenate([s, g], -1))
    assert np.abs(np.asarray(log_std) - want_log_std).max() <= 1e-5
    crit = restore_module(critic_from_config(m.network["critic"]), params["critic"], imported)
    want = ref.energy_forward(critic, args.critic_depth, s, a, g)
    got = np.asarray(crit.energy(s, a, g))
    assert np.abs(got - want).max() <= 1e-5 and np.std(want) > 0.1


def test_step_checkpoint_and_modern_jax_pickles(tmp_path):
    """A step_N.pkl written by today's jax (real jax arrays pickled) imports too; the step comes from its name."""
    import jax.numpy as jnp

    from deepcrl import artifacts
    from deepcrl.policy import load_policy

    args = ref.Args(actor_depth=4, actor_network_width=16)
    alpha, actor, critic = ref.reference_checkpoint(args, OBS, GOAL, ACT, seed=3)
    as_jax = lambda tree: {k: as_jax(v) if isinstance(v, dict) else jnp.asarray(v) for k, v in tree.items()}  # noqa
    run = tmp_path / "run"
    run.mkdir()
    (run / "step_4096.pkl").write_bytes(pickle.dumps((as_jax(alpha), as_jax(actor), as_jax(critic))))
    (run / "step_512.pkl").write_bytes(b"older, never read")
    (run / "args.pkl").write_bytes(ref.dumps_args(args))
    out = tmp_path / "out"
    assert main(["import", "scaling-crl", str(run), "--out", str(out)]) == 0
    assert artifacts.read_manifest(out).step == 4096
    s, g, _ = _inputs(8)
    want, _ = ref.actor_forward(actor, 4, s, g)
    assert np.abs(load_policy(out)(s, g) - want).max() <= 1e-5


def _refused(tmp_path, capsys, args=None, ckpt=None, raw: bytes | None = None, args_raw: bytes | None = None):
    args = args or ref.Args(actor_depth=4, actor_network_width=8, critic_network_width=8)
    run = tmp_path / "run"
    ref.write_run(run, args, ckpt or ref.reference_checkpoint(args, OBS, GOAL, ACT))
    if raw is not None:
        (run / "final.pkl").write_bytes(raw)
    if args_raw is not None:
        (run / "args.pkl").write_bytes(args_raw)
    code = main(["import", "scaling-crl", str(run), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "out" / "manifest.json").exists()
    return err


def test_relu_variant_is_refused(tmp_path, capsys):
    assert "use_relu" in _refused(tmp_path, capsys, args=ref.Args(use_relu=1, actor_depth=4))


def test_env_without_a_ref_task_is_refused(tmp_path, capsys):
    args = ref.Args(env_id="arm_reach", obs_dim=13, goal_start_idx=7, goal_end_idx=10, actor_depth=4)
    assert "arm_reach" in _refused(tmp_path, capsys, args=args, ckpt=ref.reference_checkpoint(args, 13, 3, 9))


def test_humanoid_u_maze_run_imports_to_its_ref_task(tmp_path):
    """The humanoid tasks' 268-number state and 3-D goal (`humanoid` maps to humanoid_ref the same way)."""
    from deepcrl import artifacts

    ref_env, env_id = "humanoid_u_maze", "humanoid_u_maze_ref"
    from deepcrl.policy import load_policy

    args = ref.Args(env_id=ref_env, obs_dim=268, goal_start_idx=0, goal_end_idx=3, actor_depth=4,
                    actor_network_width=16, critic_network_width=16)
    ckpt = ref.reference_checkpoint(args, 268, 3, 17)
    run = ref.write_run(tmp_path / "run", args, ckpt)
    out = tmp_path / "out"
    assert main(["import", "scaling-crl", str(run), "--out", str(out)]) == 0
    m = artifacts.read_manifest(out, "teacher")
    assert (m.env_id, m.obs_size, m.goal_size, m.action_size) == (env_id, 268, 3, 17)
    rng = np.random.default_rng(2)
    s, g = rng.normal(0, 1, (8, 268)).astype(np.float32), rng.normal(0, 1, (8, 3)).astype(np.float32)
    want, _ = ref.actor_forward(ckpt[1], 4, s, g)
    assert np.abs(load_policy(out)(s, g) - want).max() <= 1e-5


def test_other_observation_layout_is_refused(tmp_path, capsys):
    """args say reacher, but the networks were built for 20 state numbers (pusher-sized): does not fit."""
    args = ref.Args(actor_depth=4)
    err = _refused(tmp_path, capsys, args=args, ckpt=ref.reference_checkpoint(args, 20, 3, 2))
    assert "does not fit" in err


def test_diverged_checkpoint_is_refused(tmp_path, capsys):
    args = ref.Args(actor_depth=4)
    alpha, actor, critic = ref.reference_checkpoint(args, OBS, GOAL, ACT)
    critic["g_encoder"]["params"]["Dense_2"]["kernel"][0, 0] = np.nan
    assert "non-finite" in _refused(tmp_path, capsys, args=args, ckpt=(alpha, actor, critic))


def test_unknown_layout_is_refused(tmp_path, capsys):
    args = ref.Args(actor_depth=4)
    alpha, actor, critic = ref.reference_checkpoint(args, OBS, GOAL, ACT)
    actor["params"]["Conv_0"] = actor["params"].pop("Dense_3")
    assert "unknown layout" in _refused(tmp_path, capsys, args=args, ckpt=(alpha, actor, critic))


def test_corrupt_and_hostile_pickles_are_refused(tmp_path, capsys):
    good = ref.dumps_reference(ref.reference_checkpoint(ref.Args(actor_depth=4), OBS, GOAL, ACT))
    assert "corrupt" in _refused(tmp_path / "a", capsys, raw=good[: len(good) // 2])
    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    err = _refused(tmp_path / "b", capsys, raw=pickle.dumps(Hostile()))
    assert "refusing to unpickle" in err and not marker.exists()
    assert "args" in _refused(tmp_path / "c", capsys, args_raw=pickle.dumps({"env_id": "reacher"}))


def test_missing_args_is_one_sentence(tmp_path, capsys):
    run = ref.write_run(tmp_path / "run", ref.Args(), ref.reference_checkpoint(ref.Args(), OBS, GOAL, ACT))
    (run / "args.pkl").unlink()
    assert main(["import", "scaling-crl", str(run), "--out", str(tmp_path / "out")]) == 2
    assert "args.pkl" in capsys.readouterr().err


@pytest.mark.slow  # compiles reacher_ref's physics for an evaluation (~15 s)
def test_eval_accepts_the_imported_teacher(imported, capsys):
    assert main(["eval", "--run", str(imported), "--eval-episodes", "4", "--episode-length", "10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["env"] == "reacher_ref" and 0.0 <= out["success"] <= 1.0


def test_probe_refuses_a_non_maze_import_in_one_sentence(imported, capsys):
    assert main(["eval", "--run", str(imported), "--probe"]) == 2
    assert "maze" in capsys.readouterr().err


@pytest.mark.slow
def test_distill_and_export_accept_the_imported_teacher(imported, tmp_path):
    from deepcrl.export.runtime import OnnxPolicy
    from deepcrl.policy import load_policy

    model = tmp_path / "teacher.onnx"
    assert main(["export", "--run", str(imported), "--out", str(model)]) == 0
    s, g, _ = _inputs(16)
    assert np.abs(OnnxPolicy(model)(s, g) - load_policy(imported)(s, g)).max() <= 1e-5
    student = tmp_path / "student"
    assert main(["distill", "--run", str(imported), "--out", str(student), "--distill-steps", "20",
                 "--num-envs", "8", "--unroll-length", "10", "--rounds", "1", "--eval-episodes", "2",
                 "--round-eval-episodes", "2"]) == 0
    assert (student / "manifest.json").is_file()


def test_args_fields_are_plain_values():
    from deepcrl.interop import unpickle

    obj = unpickle.RestrictedUnpickler.__new__(unpickle.RestrictedUnpickler)
    assert obj.find_class("__main__", "Args") is unpickle.ReferenceArgs
    with pytest.raises(Exception, match="refusing"):
        obj.find_class("builtins", "eval")
    assert dataclasses.fields(ref.Args)  # the helper's Args is a real dataclass, as the reference's
