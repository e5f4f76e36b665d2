"""Clients of the policy server for robots and evaluation: needs only numpy, msgpack, httpx and websockets.

`PolicyClient` (HTTP, keep-alive) and `StreamClient` (WebSocket) both implement deepcrl's policy signature
``policy(observation[B, obs], goal[B, goal]) -> action[B, act]``, so
``deepcrl.evaluate.evaluate(env, PolicyClient(url))`` drives the simulator through the server. Nothing here
imports JAX or ONNX Runtime (a test checks it), so ``pip install deepcrl[client]`` is enough on the robot.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgpack
import numpy as np

from deepcrl.errors import DeepcrlError

MSGPACK = "application/msgpack"


class ServerError(DeepcrlError):
    """The server refused a request; `status` is the HTTP status (or the error frame's status)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _rows(x, size: int, name: str) -> np.ndarray:
    arr = np.asarray(x, np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != size:
        raise DeepcrlError(f"{name} has shape {np.shape(x)}; the server's model expects rows of {size} values.")
    return arr


class _PolicyBase:
    """Shared by the HTTP and WebSocket clients: sizes from the metadata and the batched policy call."""

    info: dict[str, Any]

    @property
    def obs_size(self) -> int:
        return int(self.info["obs_size"])

    @property
    def goal_size(self) -> int:
        return int(self.info["goal_size"])

    @property
    def action_size(self) -> int:
        return int(self.info["action_size"])

    @property
    def max_batch(self) -> int:
        return int(self.info["max_batch"])

    def act_batch(self, observations, goals) -> np.ndarray:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def act(self, observation, goal) -> np.ndarray:
        """One action [act] for one observation [obs] and goal [goal]."""
        return self.act_batch(_rows(observation, self.obs_size, "observation"),
                              _rows(goal, self.goal_size, "goal"))[0]

    def __call__(self, observation, goal) -> np.ndarray:
        """The policy signature: [B, obs], [B, goal] -> [B, act]; batches above the server's limit are split."""
        obs = _rows(observation, self.obs_size, "observation")
        goal = _rows(goal, self.goal_size, "goal")
        if obs.shape[0] <= self.max_batch:
            return self.act_batch(obs, goal)
        step = self.max_batch
        return np.concatenate([self.act_batch(obs[i:i + step], goal[i:i + step]) for i in range(0, len(obs), step)])


class PolicyClient(_PolicyBase):
    """HTTP client of `deepcrl serve` (keep-alive connection; msgpack by default, JSON on request).

    Args:
        url: server base URL, e.g. ``http://127.0.0.1:8000``.
        token: bearer token, if the server was started with ``--token-env``.
        model: a model name of a multi-model server (None: the server's default model).
        use_json: send and receive JSON instead of msgpack.
        timeout: seconds per request.
    """

    def __init__(self, url: str, token: str | None = None, model: str | None = None, use_json: bool = False,
                 timeout: float = 10.0):
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._prefix = f"/v1/models/{model}" if model else "/v1"
        self._json = use_json
        media = "application/json" if use_json else MSGPACK
        self._post_headers = {"content-type": media, "accept": media}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        try:
            self.info = self.metadata()
        except BaseException:
            self._http.close()
            raise

    def _check(self, response: httpx.Response) -> Any:
        content_type = response.headers.get("content-type", "")
        try:
            body = msgpack.unpackb(response.content) if "msgpack" in content_type else response.json()
        except Exception:
            body = None
        if response.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise ServerError(response.status_code, message or f"the server answered HTTP {response.status_code}.")
        if not isinstance(body, dict):
            raise ServerError(response.status_code, "the server's answer could not be decoded.")
        return body

    def _get(self, path: str) -> Any:
        try:
            return self._check(self._http.get(path, headers={"accept": MSGPACK}))
        except httpx.HTTPError as exc:
            raise ServerError(0, f"cannot reach {self.url} ({exc}).") from None

    def metadata(self) -> dict[str, Any]:
        """The served model's facts: sizes, max_batch and the ONNX file's metadata_props."""
        return self._get(f"{self._prefix}/metadata")

    def act_batch(self, observations, goals) -> np.ndarray:
        """Actions [B, act] for observations [B, obs] and goals [B, goal] in one request."""
        obs = _rows(observations, self.obs_size, "observations")
        goal = _rows(goals, self.goal_size, "goals")
        payload = {"observations": obs.tolist(), "goals": goal.tolist()}
        body = protocol_json(payload) if self._json else _packb(payload)
        try:
            response = self._http.post(f"{self._prefix}/act", content=body, headers=self._post_headers)
        except httpx.HTTPError as exc:
            raise ServerError(0, f"cannot reach {self.url} ({exc}).") from None
        self.last_timing = (reply := self._check(response)).get("timing")
        return np.asarray(reply["actions"], np.float32)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def protocol_json(payload: Any) -> bytes:
    import json

    return json.dumps(payload, allow_nan=False).encode()


class StreamClient(_PolicyBase):
    """WebSocket client of ``/v1/stream`` for control loops: one frame per request, no HTTP overhead.

    Args:
        url: server base URL (http:// or ws://).
        token: bearer token, if the server requires one.
        model: a model name of a multi-model server (None: the default model).
        timeout: seconds to wait for each answer.
    """

    def __init__(self, url: str, token: str | None = None, model: str | None = None, timeout: float = 10.0):
        from websockets.sync.client import connect

        base = url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        path = f"/v1/models/{model}/stream" if model else "/v1/stream"
        headers = {"authorization": f"Bearer {token}"} if token else None
        self._timeout = timeout
        try:
            self._ws = connect(base + path, additional_headers=headers, compression=None, open_timeout=timeout)
        except Exception as exc:  # refused handshake (401/403), unreachable host, ...
            raise ServerError(getattr(getattr(exc, "response", None), "status_code", 0),
                              f"cannot open {base + path} ({exc}).") from None
        first = msgpack.unpackb(self._ws.recv(timeout))
        if not isinstance(first, dict) or first.get("type") != "metadata":
            raise ServerError(0, "the server did not send a metadata frame first.")
        self.info = first

    def metadata(self) -> dict[str, Any]:
        return self.info

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one msgpack frame and return the decoded answer (raises `ServerError` on an error frame)."""
        self._ws.send(_packb(payload))
        reply = msgpack.unpackb(self._ws.recv(self._timeout))
        if reply.get("type") == "error":
            raise ServerError(int(reply.get("status", 400)), reply.get("error", "the server refused the frame."))
        return reply

    def act_batch(self, observations, goals) -> np.ndarray:
        obs = _rows(observations, self.obs_size, "observations")
        goal = _rows(goals, self.goal_size, "goals")
        reply = self.request({"observations": obs.tolist(), "goals": goal.tolist()})
        self.last_timing = reply.get("timing")
        return np.asarray(reply["actions"], np.float32)

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> "StreamClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
