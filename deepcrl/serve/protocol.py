"""Wire format of /v1/act and /v1/stream: decoding, validation and encoding (JSON or msgpack, never pickle).

A request is a map with either ``observation`` and ``goal`` (one vector each) or ``observations`` and ``goals``
(lists of rows). Vectors are lists of numbers; in msgpack they may also be raw little-endian float32 bytes.
Every problem raises `RequestError` with an HTTP status and one sentence naming it (sizes included), so the
server answers 4xx instead of failing.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import orjson  # parses and writes JSON several times faster than the standard library

from deepcrl.errors import DeepcrlError
from deepcrl.contract import ACTION, GOAL, OBSERVATION


def _json_loads(body: bytes) -> Any:
    return orjson.loads(body)


def _json_dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


# The request's and the answer's fields are the policy's tensor names; batches use the plural.
OBSERVATIONS, GOALS, ACTIONS = OBSERVATION + "s", GOAL + "s", ACTION + "s"

JSON = "application/json"
MSGPACK = "application/msgpack"
_MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
# What `msgpack.unpackb` raises on bad bytes: its own UnpackException family (ExtraData, FormatError,
# StackError, OutOfData), ValueError (e.g. a non-string map key under strict_map_key, invalid UTF-8),
# TypeError (an unhashable map key) and OverflowError.
_MSGPACK_ERRORS = (msgpack.UnpackException, ValueError, TypeError, OverflowError)


class RequestError(DeepcrlError):
    """A bad request: `status` is the HTTP status, the message one sentence for the caller."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def body_format(content_type: str | None) -> str:
    """'json' or 'msgpack' from a Content-Type header; 415 for anything else."""
    if not content_type:
        raise RequestError(415, "the request has no Content-Type; send application/json or application/msgpack.")
    media = content_type.split(";", 1)[0].strip().lower()
    if media == JSON:
        return "json"
    if media in _MSGPACK_TYPES:
        return "msgpack"
    raise RequestError(415, f"Content-Type {media!r} is not supported; send application/json or "
                            "application/msgpack.")


def reply_format(accept: str | None, request_format: str) -> str:
    """Answer in msgpack when asked to (Accept) or, without an Accept preference, when the request was msgpack."""
    if accept:
        accept = accept.lower()
        if "msgpack" in accept:
            return "msgpack"
        if "application/json" in accept:
            return "json"
    return request_format


def decode(body: bytes, fmt: str) -> Any:
    """Parse a body; 400 with the parser's reason when it is malformed."""
    if not body:
        raise RequestError(400, "the request body is empty; send a map with 'observation' and 'goal'.")
    if fmt == "json":
        try:
            return _json_loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(400, f"the body is not valid JSON ({exc}).") from exc
    try:
        # No ext hooks and no object hooks: msgpack here yields plain data only (never code, never pickle).
        return msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
    except _MSGPACK_ERRORS as exc:
        raise RequestError(400, f"the body is not valid msgpack ({type(exc).__name__}: {exc}).") from exc


def encode(obj: Any, fmt: str) -> bytes:
    """Serialise a reply (numpy arrays become lists)."""
    if fmt == "json":
        return _json_dumps(obj)
    return msgpack.packb(obj, default=msgpack_default, use_bin_type=True)


def msgpack_default(obj):
    """msgpack's `default` hook: numpy arrays and scalars become lists and Python numbers."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _vector_field(value: Any, name: str, size: int, batched: bool) -> np.ndarray:
    """One field as float32 [B, size] (a single vector becomes B=1)."""
    what = f"a list of rows of {size} numbers" if batched else f"a list of {size} numbers"
    if isinstance(value, (bytes, bytearray)):
        if len(value) % 4:
            raise RequestError(422, f"'{name}' is {len(value)} bytes, not a whole number of float32 values.")
        arr = np.frombuffer(value, "<f4")
        if batched:
            if arr.size % size:
                raise RequestError(422, f"'{name}' holds {arr.size} float32 values, not a multiple of the "
                                        f"model's {name.rstrip('s')} size {size}.")
            arr = arr.reshape(-1, size)
    else:
        if not isinstance(value, list):
            raise RequestError(422, f"'{name}' must be {what}, not {_kind(value)}.")
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError, OverflowError) as exc:
            raise RequestError(422, f"'{name}' is nested wrongly or ragged; it must be {what}.") from exc
        if arr.dtype.kind not in "fiu":
            if arr.dtype.kind == "O" and arr.ndim != (2 if batched else 1):
                raise RequestError(422, f"'{name}' is nested wrongly or ragged; it must be {what}.")
            raise RequestError(422, f"'{name}' holds non-numeric values ({_dtype_kind(arr)}); it must be {what}.")
    want_ndim = 2 if batched else 1
    if arr.ndim != want_ndim:
        raise RequestError(422, f"'{name}' is nested {arr.ndim} deep; it must be {what}.")
    if arr.shape[-1] != size:
        label = "rows have" if batched else "has"
        raise RequestError(422, f"'{name}' {label} {arr.shape[-1]} values but the model expects {size}.")
    with np.errstate(over="ignore"):
        arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise RequestError(422, f"'{name}' holds NaN or infinite values (or numbers too large for float32).")
    return arr if batched else arr.reshape(1, size)


def _kind(value: Any) -> str:
    return {dict: "a map", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number"
                                                                                   if isinstance(value, (int, float))
                                                                                   else type(value).__name__)


def _dtype_kind(arr: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "S": "bytes", "O": "null or mixed values"}.get(arr.dtype.kind,
                                                                                          str(arr.dtype))


def parse_act(payload: Any, obs_size: int, goal_size: int, max_batch: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate a decoded /v1/act body.

    Args:
        payload: the decoded body.
        obs_size, goal_size: the model's input sizes.
        max_batch: most rows one request may send.

    Returns:
        ``(observation[B, obs], goal[B, goal], batched)`` as float32; B=1 and batched=False for a single pair.
    """
    if not isinstance(payload, dict):
        raise RequestError(422, f"the body must be a map with 'observation' and 'goal' (or 'observations' and "
                                f"'goals'), not {_kind(payload)}.")
    single = OBSERVATION in payload or GOAL in payload
    batch = OBSERVATIONS in payload or GOALS in payload
    if single and batch:
        raise RequestError(422, "send either 'observation' and 'goal' or 'observations' and 'goals', not both.")
    if not single and not batch:
        raise RequestError(422, "the body has neither 'observation'/'goal' nor 'observations'/'goals'.")
    names = (OBSERVATIONS, GOALS) if batch else (OBSERVATION, GOAL)
    for name in names:
        if name not in payload:
            raise RequestError(422, f"the body has no '{name}'.")
    if batch:
        for name in names:
            value = payload[name]
            if isinstance(value, list):
                if not value:
                    raise RequestError(422, f"'{name}' is an empty batch; send at least one row.")
                if len(value) > max_batch:
                    raise RequestError(422, f"'{name}' has {len(value)} rows but the server takes at most "
                                            f"{max_batch} per request.")
    obs = _vector_field(payload[names[0]], names[0], obs_size, batch)
    goal = _vector_field(payload[names[1]], names[1], goal_size, batch)
    if obs.shape[0] != goal.shape[0]:
        raise RequestError(422, f"'observations' has {obs.shape[0]} rows but 'goals' has {goal.shape[0]}.")
    if obs.shape[0] == 0:
        raise RequestError(422, "the batch is empty; send at least one row.")
    if obs.shape[0] > max_batch:
        raise RequestError(422, f"the batch has {obs.shape[0]} rows but the server takes at most {max_batch} "
                                "per request.")
    return obs, goal, batch


def act_reply(actions, batched: bool) -> dict[str, Any]:
    """The answer's action field: ``{"actions": rows}`` for a batched request, else ``{"action": row}``."""
    return {ACTIONS: actions} if batched else {ACTION: actions[0]}
