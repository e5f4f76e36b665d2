"""The resumable train state: leaves with no elements (as in MJX's pipeline state) survive a save and restore."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from deepcrl.teacher.checkpoint import TRAIN_STATE_DIR, load_train_state, save_train_state


def _state(scale: float) -> dict:
    return {"a": jnp.arange(3.0) * scale, "act": jnp.zeros((4, 0)), "b": {"w": jnp.ones((2, 2)) * scale,
                                                                        "ten": jnp.zeros((4, 0, 14), jnp.int32)}}


def _shardings(tree):
    return jax.tree.map(lambda x: x.sharding, tree)


def _saved_keys(run_dir) -> set:
    with ocp.StandardCheckpointer() as ckptr:
        return set(ckptr.metadata((run_dir / TRAIN_STATE_DIR).absolute()).item_metadata)


def test_empty_leaves_are_left_out_and_restored_from_the_fresh_state(tmp_path):
    save_train_state(tmp_path, _state(2.0))
    assert _saved_keys(tmp_path) == {"00000", "00003"}  # a, b.w (sorted keys); the empty act, b.ten are not
    like = _state(0.0)
    restored = load_train_state(tmp_path, like, _shardings(like))
    assert jax.tree.structure(restored) == jax.tree.structure(like)
    np.testing.assert_array_equal(restored["a"], [0.0, 2.0, 4.0])
    np.testing.assert_array_equal(restored["b"]["w"], np.full((2, 2), 2.0))
    assert restored["act"].shape == (4, 0) and restored["b"]["ten"].shape == (4, 0, 14)
    assert restored["b"]["ten"].dtype == jnp.int32
