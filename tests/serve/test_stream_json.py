"""/v1/stream speaks JSON text frames too: text in -> JSON text out (same fields, same errors), binary msgpack
unchanged, both on one connection; the bad-frame corpus for text frames."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def _url(server, query: str = "") -> str:
    return server.url.replace("http", "ws") + "/v1/stream" + query


def _json_reply(ws) -> dict:
    reply = ws.recv(5)
    assert isinstance(reply, str), f"expected a text frame, got {type(reply).__name__}"
    return json.loads(reply)


def test_json_text_frames_get_json_text_answers_beside_msgpack(server, reference, inputs):
    obs, goal = inputs
    expected = reference(obs, goal)
    with connect(_url(server)) as ws:
        first = ws.recv(5)  # the metadata frame stays binary msgpack unless the client asks for JSON
        assert isinstance(first, bytes) and msgpack.unpackb(first)["type"] == "metadata"
        for i in range(3):
            ws.send(json.dumps({"id": i, "observation": obs[i].tolist(), "goal": goal[i].tolist()}))
            reply = _json_reply(ws)
            assert set(reply) == {"type", "id", "action", "model_version", "timing"} and reply["type"] == "action"
            assert reply["id"] == i and set(reply["timing"]) == {"server_us", "queue_us", "infer_us", "batch_rows"}
            np.testing.assert_allclose(reply["action"], expected[i], atol=1e-6)
        ws.send(json.dumps({"id": "b", "observations": obs.tolist(), "goals": goal.tolist()}))
        reply = _json_reply(ws)
        assert reply["id"] == "b" and "action" not in reply
        np.testing.assert_allclose(reply["actions"], expected, atol=1e-6)
        ws.send(json.dumps({"type": "ping", "id": 7}))
        assert _json_reply(ws) == {"type": "pong", "id": 7}
        # binary msgpack on the same connection is answered as before, with the same fields and actions
        ws.send(msgpack.packb({"id": 0, "observation": obs[0].tolist(), "goal": goal[0].tolist()}))
        packed = ws.recv(5)
        assert isinstance(packed, bytes)
        packed = msgpack.unpackb(packed)
        assert set(packed) == {"type", "id", "action", "model_version", "timing"} and packed["id"] == 0
        np.testing.assert_allclose(packed["action"], expected[0], atol=1e-6)
        ws.send(json.dumps({"id": 0, "observation": obs[0].tolist(), "goal": goal[0].tolist()}))
        assert _json_reply(ws)["action"] == packed["action"]  # bit-equal floats either way


def test_json_metadata_frame_on_request(server, reference):
    with connect(_url(server, "?format=json")) as ws:
        first = _json_reply(ws)
        assert first["type"] == "metadata" and first["obs_size"] == reference.obs_size
        assert first["goal_size"] == reference.goal_size
    with connect(_url(server)) as ws:  # the same facts as the msgpack metadata frame
        assert msgpack.unpackb(ws.recv(5)) == first


def test_unknown_format_is_refused_at_the_handshake(server):
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as info:
        with connect(_url(server, "?format=xml"), open_timeout=5):
            pass
    assert info.value.response.status_code == 403  # closed before accept


def _row(n: int, value: float = 0.1) -> str:
    return "[" + ", ".join([str(value)] * n) + "]"


# (name, frame(obs_size, goal_size) -> text, status, words in the sentence)
BAD_TEXT = [
    ("malformed JSON", lambda o, g: '{"observation": [1, 2', 400, "not valid JSON"),
    ("empty frame", lambda o, g: "", 400, "empty"),
    ("NaN literal", lambda o, g: f'{{"observation": [NaN{", 0.1" * (o - 1)}], "goal": {_row(g)}}}', 400,
     "not valid JSON"),
    ("Infinity literal", lambda o, g: f'{{"observation": [Infinity{", 0.1" * (o - 1)}], "goal": {_row(g)}}}', 400,
     "not valid JSON"),
    ("overflow to infinity", lambda o, g: f'{{"observation": [1e999{", 0.1" * (o - 1)}], "goal": {_row(g)}}}',
     400, "not valid JSON"),
    ("beyond float32", lambda o, g: f'{{"observation": [1e300{", 0.1" * (o - 1)}], "goal": {_row(g)}}}', 422,
     "too large for float32"),
    ("wrong observation size", lambda o, g: f'{{"observation": {_row(o - 1)}, "goal": {_row(g)}}}', 422,
     f"expects"),
    ("wrong goal size", lambda o, g: f'{{"observation": {_row(o)}, "goal": {_row(g + 1)}}}', 422, "expects"),
    ("string instead of a list", lambda o, g: f'{{"observation": "fast", "goal": {_row(g)}}}', 422, "not a string"),
    ("strings in the list", lambda o, g: json.dumps({"observation": ["a"] * o, "goal": [0.1] * g}), 422,
     "non-numeric"),
    ("nulls in the list", lambda o, g: json.dumps({"observation": [None] * o, "goal": [0.1] * g}), 422,
     "non-numeric"),
    ("booleans in the list", lambda o, g: json.dumps({"observation": [True] * o, "goal": [0.1] * g}), 422,
     "non-numeric"),
    ("a list, not a map", lambda o, g: _row(o), 422, "must be a map"),
    ("a bare string", lambda o, g: '"act please"', 422, "must be a map"),
    ("no goal", lambda o, g: f'{{"observation": {_row(o)}}}', 422, "no 'goal'"),
    ("nested too deep", lambda o, g: f'{{"observation": [{_row(o)}], "goal": {_row(g)}}}', 422, "nested"),
    ("ragged batch", lambda o, g: f'{{"observations": [{_row(o)}, [0.1]], "goals": [{_row(g)}, {_row(g)}]}}', 422,
     "ragged"),
    ("empty batch", lambda o, g: '{"observations": [], "goals": []}', 422, "empty"),
    ("batch over max_batch", lambda o, g: json.dumps({"observations": [[0.1] * o] * 9, "goals": [[0.1] * g] * 9}),
     422, "at most 8"),
]


@pytest.mark.parametrize("name, build, status, words", BAD_TEXT, ids=[b[0] for b in BAD_TEXT])
def test_bad_text_frame_gets_a_json_error_frame_and_the_connection_stays(server, reference, inputs, name, build,
                                                                         status, words):
    obs, goal = inputs
    with connect(_url(server)) as ws:
        ws.recv(5)
        ws.send(json.dumps({"id": 1, "observation": obs[0].tolist(), "goal": goal[0].tolist()}))
        assert _json_reply(ws)["type"] == "action"
        ws.send(build(reference.obs_size, reference.goal_size))
        reply = _json_reply(ws)
        assert reply["type"] == "error" and reply["status"] == status and reply["id"] is None
        assert words in reply["error"] and reply["error"].endswith(".") and "\n" not in reply["error"]
        ws.send(json.dumps({"id": 2, "observation": obs[1].tolist(), "goal": goal[1].tolist()}))
        reply = _json_reply(ws)  # still open and answering
        assert reply["type"] == "action" and reply["id"] == 2
        np.testing.assert_allclose(reply["action"], reference(obs[1:2], goal[1:2])[0], atol=1e-6)


def test_bad_frame_echoes_its_id_when_it_has_one(server, reference):
    with connect(_url(server)) as ws:
        ws.recv(5)
        ws.send(json.dumps({"id": "x1", "observation": [0.1], "goal": [0.1] * reference.goal_size}))
        reply = _json_reply(ws)
        assert reply == {"type": "error", "id": "x1", "status": 422, "error": reply["error"]}
        assert f"expects {reference.obs_size}" in reply["error"]


def test_text_frame_over_the_size_limit_closes_with_1009(server):
    with connect(_url(server)) as ws:
        ws.recv(5)
        ws.send('{"observation": [' + "0.1, " * 6000 + '0.1], "goal": [0.1]}')  # ~30 kB; the limit is 20 kB
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(5)
        assert info.value.rcvd.code == 1009  # "message too big", as for a binary frame
