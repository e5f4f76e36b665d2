"""Validation of request bodies: every bad input gets its status and a sentence that names the problem."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest

from deepcrl.serve.protocol import RequestError, body_format, decode, encode, parse_act, reply_format


def _error(payload, max_batch=4) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_act(payload, 3, 2, max_batch)
    return info.value


def test_single_and_batch_parse_to_float32_rows():
    obs, goal, batched = parse_act({"observation": [1, 2.5, 3], "goal": [0, 1]}, 3, 2, 4)
    assert not batched and obs.dtype == np.float32 and obs.shape == (1, 3) and goal.shape == (1, 2)
    np.testing.assert_array_equal(obs[0], [1, 2.5, 3])
    obs, goal, batched = parse_act({"observations": [[1, 2, 3]] * 3, "goals": [[0, 1]] * 3}, 3, 2, 4)
    assert batched and obs.shape == (3, 3) and goal.shape == (3, 2)


def test_msgpack_bytes_vectors_are_little_endian_float32():
    rows = np.arange(6, dtype="<f4").reshape(2, 3)
    obs, goal, _ = parse_act({"observations": rows.tobytes(), "goals": np.ones((2, 2), "<f4").tobytes()}, 3, 2, 4)
    np.testing.assert_array_equal(obs, rows)
    assert _error({"observation": b"\x00" * 5, "goal": [0, 1]}).status == 422


@pytest.mark.parametrize("payload, words", [
    ({"observation": [1, 2], "goal": [0, 1]}, ["'observation' has 2 values", "expects 3"]),
    ({"observation": [1, 2, 3], "goal": [0, 1, 2]}, ["'goal' has 3 values", "expects 2"]),
    ({"observations": [[1, 2]], "goals": [[0, 1]]}, ["rows have 2 values", "expects 3"]),
    ({"observation": [1, math.nan, 3], "goal": [0, 1]}, ["NaN or infinite"]),
    ({"observation": [1, math.inf, 3], "goal": [0, 1]}, ["NaN or infinite"]),
    ({"observation": [1, 1e300, 3], "goal": [0, 1]}, ["too large for float32"]),
    ({"observation": [1, "2", 3], "goal": [0, 1]}, ["non-numeric", "strings"]),
    ({"observation": [1, None, 3], "goal": [0, 1]}, ["non-numeric"]),
    ({"observation": [True, False, True], "goal": [0, 1]}, ["non-numeric", "booleans"]),
    ({"observation": [[1, 2, 3]], "goal": [0, 1]}, ["nested 2 deep", "a list of 3 numbers"]),
    ({"observation": 5, "goal": [0, 1]}, ["must be a list of 3 numbers", "not a number"]),
    ({"observations": [[1, 2, 3], [1, 2]], "goals": [[0, 1], [0, 1]]}, ["ragged"]),
    ({"observations": [1, 2, 3], "goals": [[0, 1]]}, ["nested 1 deep"]),
    ({"observations": [], "goals": []}, ["empty batch"]),
    ({"observations": [[1, 2, 3]] * 5, "goals": [[0, 1]] * 5}, ["5 rows", "at most 4"]),
    ({"observations": [[1, 2, 3]] * 2, "goals": [[0, 1]] * 3}, ["2 rows", "'goals' has 3"]),
    ({"observation": [1, 2, 3]}, ["no 'goal'"]),
    ({"observation": [1, 2, 3], "goal": [0, 1], "goals": [[0, 1]]}, ["not both"]),
    ({"obs": [1, 2, 3]}, ["neither"]),
    ([1, 2, 3], ["must be a map", "not list"]),
])
def test_bad_payloads_are_422_with_a_sentence(payload, words):
    err = _error(payload)
    assert err.status == 422
    for word in words:
        assert word in str(err), str(err)


def test_malformed_bodies_are_400():
    assert "not valid JSON" in str(pytest.raises(RequestError, decode, b"{nope", "json").value)
    assert pytest.raises(RequestError, decode, b"[NaN]", "json").value.status == 400  # NaN is not JSON
    assert pytest.raises(RequestError, decode, b"\xc1\xc1", "msgpack").value.status == 400
    assert pytest.raises(RequestError, decode, msgpack.packb({"a": 1}) + b"\x01", "msgpack").value.status == 400
    assert "empty" in str(pytest.raises(RequestError, decode, b"", "json").value)


def test_content_type_negotiation():
    assert body_format("application/json; charset=utf-8") == "json"
    assert body_format("application/x-msgpack") == "msgpack"
    for bad in (None, "text/plain", "application/octet-stream"):
        assert pytest.raises(RequestError, body_format, bad).value.status == 415
    assert reply_format(None, "msgpack") == "msgpack"
    assert reply_format("application/json", "msgpack") == "json"
    assert reply_format("application/msgpack", "json") == "msgpack"
    assert reply_format("*/*", "json") == "json"


def test_encode_round_trips_numpy_in_both_formats():
    value = {"action": np.array([0.5, -0.25], np.float32)}
    assert msgpack.unpackb(encode(value, "msgpack")) == {"action": [0.5, -0.25]}
    assert decode(encode(value, "json"), "json") == {"action": [0.5, -0.25]}
