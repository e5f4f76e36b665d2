"""Model lifecycle: load, replace and unload models while requests flow (Triton's model repository extension).

The repository is what ``--model`` names: a directory of .onnx files (model name = file stem) or one file.
``--model-control`` chooses who changes what is served, as Triton's ``--model-control-mode`` does:

- ``none`` (default): the models loaded at start serve until the server stops; load / unload answer 400.
- ``explicit``: ``POST /v2/repository/models/{name}/load`` (re)reads ``{name}.onnx`` from the repository and
  ``/unload`` stops serving it.
- ``poll``: every ``--repository-poll-s`` seconds the directory is scanned; a new or changed file (mtime, size)
  is loaded, a removed one unloaded. Write a new file beside and ``mv`` it into place: a half-written file
  fails to load and the old version keeps serving until the complete one lands. Under ``--workers N`` each
  worker polls for itself, so every worker follows the directory.

``GET`` / ``POST /v2/repository/index`` lists the models with ``name``, ``version``, ``state`` (READY,
LOADING, UNAVAILABLE) and ``reason``, in every mode.

A load builds and warms up the new session on a thread while the old one keeps answering, then swaps them in
one step on the event loop: requests already queued finish on the old session (its batcher drains, then
stops), later ones go to the new one; a request read before the swap and queued after it is handed to the
new session (`PolicyServer.infer`). Each load of a name counts a version (1 at start); /v1 answers carry it
in ``X-Model-Version``, v2 in ``model_version``, WebSocket action frames in ``model_version``, and /metrics in
``deepcrl_model_answers_total{model, version}`` and ``deepcrl_model_version``. A load that fails (missing,
corrupt or not a deepcrl policy: 400; different input or output sizes than the version serving: 409) leaves
the serving version in place and answers one sentence.

Limit: under ``--workers N`` an explicit load or unload reaches only the worker that took the request (the
kernel picks it); use ``poll`` there, or one worker per port.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response

from deepcrl.errors import ArtifactError
from deepcrl.serve import protocol
from deepcrl.serve.protocol import RequestError
from deepcrl.serve.shared import NEEDS_TOKEN, PolicyServer, Served

_log = logging.getLogger("deepcrl.serve")
CONTROL_MODES = ("none", "explicit", "poll")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class Repository:
    """The models a server may serve, their versions and states, and the load / unload / poll operations.

    Args:
        root: the ``--model`` path: a directory of .onnx files, or one file.
        server: the app's `PolicyServer` (its `served` dict is changed in place).
        load: ``load(path, version) -> Served`` (blocking: builds and warms up a session; run on a thread).
        control: "none", "explicit" or "poll".
        poll_s: seconds between scans in poll mode.
    """

    def __init__(self, root: Path, server: PolicyServer, load: Callable[[Path, str], Served], control: str = "none",
                 poll_s: float = 1.0):
        if control not in CONTROL_MODES:
            raise ValueError(f"model control is one of {', '.join(CONTROL_MODES)}, not {control!r}")
        self.root, self.server, self._load, self.control, self.poll_s = Path(root), server, load, control, poll_s
        self.states: dict[str, tuple[str, str]] = {name: ("READY", "") for name in server.served}
        self.versions: dict[str, int] = {name: int(s.version) for name, s in server.served.items()}
        self._seen = self._scan()
        self._lock: asyncio.Lock | None = None
        for name, s in server.served.items():
            server.metrics.model_version.labels(name).set(int(s.version))

    # ---- the repository on disk ---------------------------------------------------------------------------------

    def _files(self) -> dict[str, Path]:
        if self.root.is_dir():
            return {p.stem: p for p in sorted(self.root.glob("*.onnx"))}
        return {self.root.stem: self.root} if self.root.exists() else {}

    def _scan(self) -> dict[str, tuple[int, int]]:
        out = {}
        for name, path in self._files().items():
            try:
                st = path.stat()
            except OSError:  # removed between the listing and the stat
                continue
            out[name] = (st.st_mtime_ns, st.st_size)
        return out

    def path_of(self, name: str) -> Path:
        if not _NAME.match(name):
            raise RequestError(400, f"{name!r} is not a model name (letters, digits, '_', '.', '-').")
        path = self._files().get(name)
        if path is None:
            where = f"{self.root}/{name}.onnx" if self.root.is_dir() else str(self.root)
            raise RequestError(400, f"the repository has no model {name!r} (looked for {where}).")
        return path

    # ---- operations (on the event loop) -------------------------------------------------------------------------

    def _lock_(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def load(self, name: str) -> Served:
        """Load (or replace) `name` from the repository; the old version serves until the new one is ready."""
        async with self._lock_():
            path = self.path_of(name)
            old = self.server.served.get(name)
            version = str(self.versions.get(name, 0) + 1)
            self.states[name] = ("LOADING", "")
            try:
                new = await asyncio.to_thread(self._load, path, version)
            except ArtifactError as exc:
                self._failed(name, old, str(exc))
                keeps = f"; version {old.version} keeps serving" if old else ""
                raise RequestError(400, f"loading model {name!r} failed{keeps}: {exc}") from exc
            if old is not None:
                was = (old.model.obs_size, old.model.goal_size, old.model.action_size)
                now = (new.model.obs_size, new.model.goal_size, new.model.action_size)
                if was != now:
                    reason = (f"the new file's (obs, goal, action) sizes {now} differ from the serving version's "
                              f"{was}; serve it under another name")
                    self._failed(name, old, reason)
                    raise RequestError(409, f"loading model {name!r} failed; version {old.version} keeps serving: "
                                            f"{reason}.")
            self.versions[name] = int(version)
            new.batcher.start(asyncio.get_running_loop())
            self.server.served[name] = new  # from here on, new requests go to the new version
            self.states[name] = ("READY", "")
            self.server.metrics.model_version.labels(name).set(int(version))
            if old is not None:
                await self._retire(old, new)
            _log.info("loaded %s version %s from %s", name, version, path)
            return new

    async def unload(self, name: str) -> None:
        async with self._lock_():
            old = self.server.served.pop(name, None)
            if old is None:
                raise RequestError(400, f"model {name!r} is not loaded.")
            self.states[name] = ("UNAVAILABLE", "unloaded")
            await self._retire(old, None)

    def _failed(self, name: str, old: Served | None, reason: str) -> None:
        self.states[name] = ("READY", f"the last load failed: {reason}") if old else ("UNAVAILABLE", reason)

    @staticmethod
    async def _retire(old: Served, new: Served | None) -> None:
        old.replacement, old.retired = new, True
        old.batcher.begin_stop()  # on the loop's thread: no submit can slip in behind the worker's last look
        await asyncio.to_thread(old.batcher.stop)  # its queued requests are answered by the old session

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        names = sorted(set(self._files()) | set(self.states))
        out = []
        for name in names:
            state, reason = self.states.get(name, ("UNAVAILABLE", "not loaded"))
            if ready_only and state != "READY":
                continue
            entry = {"name": name, "state": state, "reason": reason}
            if name in self.server.served:
                entry["version"] = self.server.served[name].version
            out.append(entry)
        return out

    async def poll_once(self) -> None:
        """Load new or changed files, unload removed ones (failures are logged; the old version serves)."""
        seen = self._scan()
        for name, signature in seen.items():
            if self._seen.get(name) != signature:
                try:
                    await self.load(name)
                except RequestError as exc:
                    _log.warning("%s", exc)
        for name in set(self._seen) - set(seen):
            if name in self.server.served:
                await self.unload(name)
        self._seen = seen

    async def poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.poll_once()
            except Exception:  # noqa: BLE001 - a bad scan must not end polling
                _log.exception("polling the model repository failed")


def add_routes(app: FastAPI, server: PolicyServer, repo: Repository) -> None:
    """Add ``/v2/repository/index`` and ``/v2/repository/models/{name}/load|unload`` to `app`."""

    def error(exc: RequestError) -> Response:
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        return Response(protocol.encode({"error": str(exc)}, "json"), exc.status, headers=headers,
                        media_type=protocol.JSON)

    async def body_of(request: Request) -> dict:
        raw = await request.body()
        if not raw.strip():
            return {}
        parsed = protocol.decode(raw, "json")
        if not isinstance(parsed, dict):
            raise RequestError(400, "the body must be a JSON map.")
        return parsed

    async def index(request: Request) -> Response:
        try:
            if not server.authorized(request.headers):
                raise RequestError(401, NEEDS_TOKEN)
            body = await body_of(request) if request.method == "POST" else {}
            return Response(protocol.encode(repo.index(bool(body.get("ready", False))), "json"),
                            media_type=protocol.JSON)
        except RequestError as exc:
            return error(exc)

    def controllable(request: Request) -> None:
        if not server.authorized(request.headers):
            raise RequestError(401, NEEDS_TOKEN)
        if repo.control == "none":
            raise RequestError(400, "model control is off; start the server with --model-control explicit to load "
                                    "and unload models.")
        if repo.control == "poll":
            raise RequestError(400, "the server polls its model repository (--model-control poll); change the "
                                    "files there instead of calling load / unload.")

    async def load(request: Request, name: str) -> Response:
        try:
            controllable(request)
            await body_of(request)  # Triton's optional parameters: accepted, none is used
            await repo.load(name)
            return Response(b"", 200)
        except RequestError as exc:
            return error(exc)

    async def unload(request: Request, name: str) -> Response:
        try:
            controllable(request)
            await body_of(request)
            await repo.unload(name)
            return Response(b"", 200)
        except RequestError as exc:
            return error(exc)

    app.add_api_route("/v2/repository/index", index, methods=["GET", "POST"])
    app.add_api_route("/v2/repository/models/{name}/load", load, methods=["POST"])
    app.add_api_route("/v2/repository/models/{name}/unload", unload, methods=["POST"])
