"""Clients of the policy server for robots and evaluation: need only numpy, msgpack and websockets.

`PolicyClient` (HTTP, keep-alive; deepcrl's /v1, or the Open Inference Protocol (KServe v2) that Triton, KServe,
MLServer and deepcrl's /v2 routes speak) and `StreamClient` (WebSocket) both implement deepcrl's policy signature
``policy(observation[B, obs], goal[B, goal]) -> action[B, act]``, so
``deepcrl.evaluate.evaluate(env, PolicyClient(url))`` drives the simulator through the server. Nothing here
imports JAX or ONNX Runtime (a test checks it), so ``pip install deepcrl[client]`` is enough on the robot
(HTTP uses the standard library; WebSocket uses `websockets`). Both speak TLS to a server started with
``--tls-cert``: an ``https://`` URL, with ``ca=`` naming the CA bundle of a self-signed server and ``cert=`` /
``key=`` the client certificate a server with ``--tls-client-ca`` asks for (`deepcrl.serve.tls.client_context`).
"""

from __future__ import annotations

from typing import Any

import http.client
import json
import ssl
import warnings
from urllib.parse import urlsplit

import msgpack
import numpy as np

from deepcrl.errors import DeepcrlError
from deepcrl.contract import ACTION, ACTION_SIZE, GOAL, GOAL_SIZE, OBS_SIZE, OBSERVATION
from deepcrl.serve.tls import client_context

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


def _tls(url: str, ca, cert, key):
    """The TLS context of an https:// or wss:// URL (None for a plain one, which takes no TLS options)."""
    if urlsplit(url).scheme in ("https", "wss"):
        return client_context(ca, cert, key)
    if (ca, cert, key) != (None, None, None):
        raise DeepcrlError(f"ca=, cert= and key= are TLS options; {url!r} is not an https:// URL.")
    return None


def _model_name(model_name: str | None, model: str | None) -> str | None:
    """`model_name`, or the deprecated `model=` keyword (with a `DeprecationWarning` naming the new one)."""
    if model is None:
        return model_name
    warnings.warn("model= is deprecated; use model_name=", DeprecationWarning, stacklevel=3)
    if model_name is not None and model_name != model:
        raise DeepcrlError(f"model_name={model_name!r} and model={model!r} disagree; pass only model_name.")
    return model


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
    def max_batch_size(self) -> int:
        """Most rows the server takes per request (larger batches are split by `__call__`)."""
        return int(self.info.get("max_batch_size", self.info.get("max_batch")))  # a previous release's server

    @property
    def max_batch(self) -> int:
        """Deprecated: `max_batch_size`."""
        warnings.warn("max_batch is deprecated; use max_batch_size", DeprecationWarning, stacklevel=2)
        return self.max_batch_size

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
        if obs.shape[0] <= self.max_batch_size:
            return self.act_batch(obs, goal)
        step = self.max_batch_size
        return np.concatenate([self.act_batch(obs[i:i + step], goal[i:i + step]) for i in range(0, len(obs), step)])


class PolicyClient(_PolicyBase):
    """HTTP client of `deepcrl serve` (one keep-alive connection; msgpack by default, JSON on request).

    Built on the standard library's `http.client`: at concurrency 1 it answers in a fraction of httpx's time
    per request (measured by `deepcrl bench serve`), which is what a robot's control loop pays. A connection
    the server closed while idle is reopened once, transparently (asking for an action has no side effects).

    Args:
        url: server base URL, e.g. ``http://127.0.0.1:8000`` (https too).
        token: bearer token, if the server was started with ``--token-env``.
        model_name: a model name of a multi-model server (None: the server's default model).
        use_json: send and receive JSON instead of msgpack (v2 always uses JSON tensors).
        timeout: seconds per request.
        protocol: "v1" (deepcrl's own) or "v2" (the Open Inference Protocol, KServe v2); v2 needs `model_name`.
        ca: with https://, the PEM CA bundle that signed the server's certificate (None: the system's CAs).
        cert: with https://, a PEM client certificate (a server with ``--tls-client-ca`` requires one).
        key: its private key, when not in `cert`.
        model: deprecated spelling of `model_name`.
    """

    def __init__(self, url: str, token: str | None = None, model_name: str | None = None, use_json: bool = False,
                 timeout: float = 10.0, protocol: str = "v1", *, ca: str | None = None, cert: str | None = None,
                 key: str | None = None, model: str | None = None):
        model = _model_name(model_name, model)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DeepcrlError(f"{url!r} is not an http:// or https:// URL of a deepcrl server.")
        if protocol not in ("v1", "v2"):
            raise DeepcrlError(f"the protocol is 'v1' or 'v2', not {protocol!r}.")
        if protocol == "v2" and not model:
            raise DeepcrlError("the v2 protocol addresses a model by name; pass model_name=NAME (deepcrl "
                               "eval: --model-name NAME).")
        self.url, self.protocol = url.rstrip("/"), protocol
        self._connect_args = (parts.hostname, parts.port, timeout)
        self._tls = _tls(url, ca, cert, key)
        # a server requiring a client certificate (--tls-client-ca) ends the handshake of a client without one
        self._hint = " (a server started with --tls-client-ca wants cert= and key=)" \
            if self._tls is not None and cert is None else ""
        path = f"/v2/models/{model}" if protocol == "v2" else f"/v1/models/{model}" if model else "/v1"
        self._prefix = parts.path.rstrip("/") + path
        self._json = use_json or protocol == "v2"
        media = "application/json" if self._json else MSGPACK
        auth = {"authorization": f"Bearer {token}"} if token else {}
        self._post_headers = {"content-type": media, "accept": media, **auth}
        self._get_headers = {"accept": media if protocol == "v2" else MSGPACK, **auth}
        self._conn: http.client.HTTPConnection | None = None
        self.last_timing: dict[str, Any] | None = None
        self.info = self.metadata()

    def _roundtrip(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Any:
        for attempt in (0, 1):
            if self._conn is None:
                host, port, timeout = self._connect_args
                if self._tls is None:
                    self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
                else:
                    self._conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
            try:
                self._conn.request(method, self._prefix + path, body, headers)
                response = self._conn.getresponse()
                content = response.read()
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
                self.close()  # a keep-alive connection the server closed while idle: reopen it once
                if attempt:
                    raise ServerError(0, f"cannot reach {self.url} ({exc}){self._hint}.") from exc
                continue
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise ServerError(0, f"{self.url}'s certificate is not trusted ({exc.verify_message}); pass "
                                     "ca= the CA bundle that signed it.") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                hint = self._hint if isinstance(exc, ssl.SSLError) else ""  # a TLS alert, not a refused connection
                raise ServerError(0, f"cannot reach {self.url} ({type(exc).__name__}: {exc}){hint}.") from exc
            return self._check(response.status, response.getheader("content-type", ""), content)

    @staticmethod
    def _check(status: int, content_type: str, content: bytes) -> Any:
        try:
            body = msgpack.unpackb(content) if "msgpack" in content_type else json.loads(content)
        except (ValueError, TypeError, msgpack.UnpackException):  # not JSON / msgpack: judged by status below
            body = None
        if status >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise ServerError(status, message or f"the server answered HTTP {status}.")
        if not isinstance(body, dict):
            raise ServerError(status, "the server's answer could not be decoded.")
        return body

    def metadata(self) -> dict[str, Any]:
        """The served model's facts: sizes, max_batch_size and the ONNX file's metadata_props (under "metadata")."""
        if self.protocol == "v2":
            return self._v2_metadata()
        return self._roundtrip("GET", "/metadata", None, self._get_headers)

    def _v2_metadata(self) -> dict[str, Any]:
        """The /v1 metadata's facts from a v2 server: sizes from the model's tensors; max_batch_size and the file's
        metadata from the metadata's parameters (deepcrl) or the model configuration (Triton's extension)."""
        meta = self._roundtrip("GET", "", None, self._get_headers)
        tensors = {t.get("name"): t.get("shape") for t in [*meta.get("inputs", []), *meta.get("outputs", [])]
                   if isinstance(t, dict)}
        try:
            sizes = {key: int(tensors[name][-1]) for key, name in
                     ((OBS_SIZE, OBSERVATION), (GOAL_SIZE, GOAL), (ACTION_SIZE, ACTION))}
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise DeepcrlError(f"the model {meta.get('name')!r} at {self.url} does not have the deepcrl policy "
                               f"signature (inputs {OBSERVATION}, {GOAL}; output {ACTION}).") from exc
        params = dict(meta.get("parameters") or {})
        if "max_batch" in params and "max_batch_size" not in params:  # a previous release's deepcrl server
            params["max_batch_size"] = params["max_batch"]
        params.pop("max_batch", None)
        if "max_batch_size" not in params:
            try:
                config = self._roundtrip("GET", "/config", None, self._get_headers)
            except ServerError:  # not Triton: no model configuration to read
                config = {}
            params.update({k.removeprefix("deepcrl_"): v.get("string_value") for k, v in
                           (config.get("parameters") or {}).items() if isinstance(v, dict)})
            if config.get("max_batch_size"):
                params["max_batch_size"] = config["max_batch_size"]
        max_batch_size = int(params.pop("max_batch_size", 0) or 2**31 - 1)  # unknown: never split
        return {"name": meta.get("name"), **sizes, "max_batch_size": max_batch_size, "metadata": params}

    def act_batch(self, observations, goals) -> np.ndarray:
        """Actions [B, act] for observations [B, obs] and goals [B, goal] in one request."""
        obs = _rows(observations, self.obs_size, "observations")
        goal = _rows(goals, self.goal_size, "goals")
        if self.protocol == "v2":
            return self._v2_infer(obs, goal)
        payload = {"observations": obs.tolist(), "goals": goal.tolist()}
        body = json.dumps(payload).encode() if self._json else _packb(payload)
        reply = self._roundtrip("POST", "/act", body, self._post_headers)
        self.last_timing = reply.get("timing")
        return np.asarray(reply["actions"], np.float32)

    def _v2_infer(self, obs: np.ndarray, goal: np.ndarray) -> np.ndarray:
        tensors = [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
                   for name, x in ((OBSERVATION, obs), (GOAL, goal))]
        body = json.dumps({"inputs": tensors, "outputs": [{"name": ACTION}]}).encode()
        reply = self._roundtrip("POST", "/infer", body, self._post_headers)
        out = next((o for o in reply.get("outputs", []) if isinstance(o, dict) and o.get("name") == ACTION), None)
        try:
            return np.asarray(out["data"], np.float32).reshape(len(obs), self.action_size)
        except (TypeError, KeyError, ValueError) as exc:
            raise ServerError(200, f"the server's answer has no '{ACTION}' of {len(obs)} x {self.action_size} "
                                   "numbers.") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StreamClient(_PolicyBase):
    """WebSocket client of ``/v1/stream`` for control loops: one frame per request, no HTTP overhead.

    Args:
        url: server base URL (http:// or ws://; https:// or wss:// for a server with TLS).
        token: bearer token, if the server requires one.
        model_name: a model name of a multi-model server (None: the default model).
        timeout: seconds to wait for each answer.
        ca, cert, key: TLS options, as `PolicyClient`'s.
        model: deprecated spelling of `model_name`.
    """

    def __init__(self, url: str, token: str | None = None, model_name: str | None = None, timeout: float = 10.0,
                 *, ca: str | None = None, cert: str | None = None, key: str | None = None,
                 model: str | None = None):
        model = _model_name(model_name, model)
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        base = url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        path = f"/v1/models/{model}/stream" if model else "/v1/stream"
        headers = {"authorization": f"Bearer {token}"} if token else None
        self._timeout = timeout
        try:
            self._ws = connect(base + path, additional_headers=headers, compression=None, open_timeout=timeout,
                               ssl=_tls(base, ca, cert, key))
        except (WebSocketException, OSError, TimeoutError) as exc:  # refused handshake (401/403), unreachable
            raise ServerError(getattr(getattr(exc, "response", None), "status_code", 0),
                              f"cannot open {base + path} ({exc}).") from exc
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
