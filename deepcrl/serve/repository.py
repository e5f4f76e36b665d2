"""Model lifecycle: load, replace and unload models while requests flow (Triton's model repository extension).

The repository is what ``--model`` names: a directory of .onnx files (model name = file stem) or one file.
``--model-control`` chooses who changes what is served, as Triton's ``--model-control-mode`` does:

- ``none`` (default): the models loaded at start serve until the server stops; load / unload answer 400.
- ``explicit``: ``POST /v2/repository/models/{name}/load`` (re)reads ``{name}.onnx`` from the repository and
  ``/unload`` stops serving it.
- ``poll``: every ``--repository-poll-s`` seconds the directory is scanned; a new or changed file (mtime, size)
  is loaded, a removed one unloaded. Write a new file beside and ``mv`` it into place: a half-written file
  fails to load and the old version keeps serving until the complete one lands.

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

Under ``--workers N`` the workers share a control directory (`control.py`): a load or unload answered by any
worker is validated there, then applied by every worker before the call answers (a 500 names the workers that
did not), so ``/v2/repository/index``, versions and answers agree across workers; in poll mode the worker that
sees a change first loads it and the others apply the same version.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from deepcrl.errors import ArtifactError
from deepcrl.serve import control
from deepcrl.serve.control import WATCH_S, SharedControl
from deepcrl.serve.protocol import RequestError
from deepcrl.serve.shared import PolicyServer, Served

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
        shared: the control directory of ``--workers N`` (`control.py`): loads and unloads reach every worker.
    """

    def __init__(self, root: Path, server: PolicyServer, load: Callable[[Path, str], Served], control: str = "none",
                 poll_s: float = 1.0, shared: SharedControl | None = None):
        if control not in CONTROL_MODES:
            raise ValueError(f"model control is one of {', '.join(CONTROL_MODES)}, not {control!r}")
        self.root, self.server, self._load, self.control, self.poll_s = Path(root), server, load, control, poll_s
        self.states: dict[str, tuple[str, str]] = {name: ("READY", "") for name in server.served}
        self.versions: dict[str, int] = {name: int(s.version) for name, s in server.served.items()}
        self._seen = self._scan()
        self._lock: asyncio.Lock | None = None
        self.shared = shared
        self._tasks: list[asyncio.Task] = []
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

    def check_control(self) -> None:
        """Refuse (400) a load or unload call unless model control is explicit."""
        if self.control == "none":
            raise RequestError(400, "model control is off; start the server with --model-control explicit to load "
                                    "and unload models.")
        if self.control == "poll":
            raise RequestError(400, "the server polls its model repository (--model-control poll); change the "
                                    "files there instead of calling load / unload.")

    # ---- operations (on the event loop) -------------------------------------------------------------------------

    def _lock_(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _build(self, name: str, path: Path, version: int, old: Served | None) -> Served:
        """`path` loaded and warmed up as `version` of `name` (on a thread), or `_Failed` with the reason."""
        try:
            new = await asyncio.to_thread(self._load, path, str(version))
        except ArtifactError as exc:
            raise _Failed(400, str(exc)) from exc
        if old is not None:
            was = (old.model.obs_size, old.model.goal_size, old.model.action_size)
            now = (new.model.obs_size, new.model.goal_size, new.model.action_size)
            if was != now:
                raise _Failed(409, f"the new file's (obs, goal, action) sizes {now} differ from the serving "
                                   f"version's {was}; serve it under another name")
        return new

    @staticmethod
    def _refusal(name: str, old: Served | None, failed: "_Failed") -> RequestError:
        keeps = f"; version {old.version} keeps serving" if old else ""
        end = "." if failed.status == 409 else ""
        return RequestError(failed.status, f"loading model {name!r} failed{keeps}: {failed.reason}{end}")

    async def _swap(self, name: str, new: Served, reason: str = "") -> None:
        """Serve `new` from now on; the version it replaces answers what it has queued, then stops."""
        old = self.server.served.get(name)
        self.versions[name] = int(new.version)
        new.batcher.start(asyncio.get_running_loop())
        self.server.served[name] = new  # from here on, new requests go to the new version
        self.states[name] = ("READY", reason)
        self.server.metrics.model_version.labels(name).set(int(new.version))
        if old is not None:
            await self._retire(old, new)

    async def load(self, name: str, *, if_changed: bool = False) -> Served | None:
        """Load (or replace) `name` from the repository; the old version serves until the new one is ready.

        Under shared control (``--workers N``) every worker serves the new version before this returns, and
        `if_changed` (the poller) skips a file another worker already loaded (None).
        """
        if self.shared is not None:
            return await self._load_shared(name, if_changed)
        async with self._lock_():
            path = self.path_of(name)
            old = self.server.served.get(name)
            version = self.versions.get(name, 0) + 1
            self.states[name] = ("LOADING", "")
            try:
                new = await self._build(name, path, version, old)
            except _Failed as failed:
                self._failed(name, old, failed.reason)
                raise self._refusal(name, old, failed) from failed.__cause__
            await self._swap(name, new)
            _log.info("loaded %s version %s from %s", name, version, path)
            return new

    async def unload(self, name: str, *, quiet: bool = False) -> None:
        """Stop serving `name` (400 when it is not loaded, unless `quiet`)."""
        if self.shared is not None:
            return await self._unload_shared(name, quiet)
        async with self._lock_():
            await self._take_out(name, quiet)

    async def _take_out(self, name: str, quiet: bool) -> bool:
        """Stop serving `name` in this process; False when it was not loaded (400 unless `quiet`)."""
        old = self.server.served.pop(name, None)
        if old is None:
            if quiet:
                return False
            raise RequestError(400, f"model {name!r} is not loaded.")
        self.states[name] = ("UNAVAILABLE", "unloaded")
        await self._retire(old, None)
        return True

    def _failed(self, name: str, old: Served | None, reason: str) -> None:
        self.states[name] = ("READY", f"the last load failed: {reason}") if old else ("UNAVAILABLE", reason)

    @staticmethod
    async def _retire(old: Served, new: Served | None) -> None:
        old.replacement, old.retired = new, True
        old.batcher.begin_stop()  # on the loop's thread: no submit can slip in behind the worker's last look
        await asyncio.to_thread(old.batcher.stop)  # its queued requests are answered by the old session

    # ---- the same operations shared by the workers of one server (`control.py`) -----------------------------

    async def _load_shared(self, name: str, if_changed: bool) -> Served | None:
        shared = self.shared
        async with shared.locked(), self._lock_():
            state = shared.read()
            await self._apply(state)  # catch up with the other workers first
            path = self.path_of(name)
            signature = control.signature(path)
            entry = state["models"].get(name)
            if if_changed and entry is not None and entry.get("signature") == signature:
                return None
            old = self.server.served.get(name)
            version = self.versions.get(name, 0) + 1
            try:
                snapshot = shared.snapshot(path, name, state["generation"] + 1)  # the bytes every worker loads
            except OSError as exc:
                raise RequestError(400, f"loading model {name!r} failed: cannot read {path} ({exc.strerror}).") from exc
            self.states[name] = ("LOADING", "")
            try:
                new = await self._build(name, snapshot, version, old)
            except _Failed as failed:  # nothing changes anywhere but the index's reason
                shutil.rmtree(snapshot.parent, ignore_errors=True)
                failed.reason = failed.reason.replace(str(snapshot), str(path))  # name the file the user wrote
                self._failed(name, old, failed.reason)
                base = entry or {"served": old is not None, "version": self.versions.get(name, 0), "file": None}
                generation = shared.publish(state, name, {**base, "reason": self.states[name][1],
                                                          "signature": signature})
                shared.ack(generation, [])
                problems = await shared.wait_applied(generation)
                if problems:
                    _log.warning("a failed load's reason did not reach every worker: %s", problems)
                raise self._refusal(name, old, failed) from failed.__cause__
            await self._swap(name, new)
            generation = shared.publish(state, name, {"served": True, "version": version, "file": str(snapshot),
                                                      "reason": "", "signature": signature})
            shared.ack(generation, [])
            _log.info("loaded %s version %s from %s (generation %d)", name, version, path, generation)
            await self._settle(f"model {name!r} version {version} serves on this worker", generation)
            return new

    async def _unload_shared(self, name: str, quiet: bool) -> None:
        shared = self.shared
        async with shared.locked(), self._lock_():
            state = shared.read()
            await self._apply(state)
            if not await self._take_out(name, quiet):
                return
            generation = shared.publish(state, name, {"served": False, "version": self.versions.get(name, 0),
                                                      "file": None, "reason": "unloaded", "signature": None})
            shared.ack(generation, [])
            await self._settle(f"model {name!r} is unloaded on this worker", generation)

    async def _settle(self, what: str, generation: int) -> None:
        """Answer once every worker applied `generation` (500 naming those that did not)."""
        problems = await self.shared.wait_applied(generation)
        if problems:
            raise RequestError(500, f"{what}, but not on every worker: "
                                    + "; ".join(f"worker {w}: {p}" for w, p in sorted(problems.items())) + ".")
        self.shared.prune()

    async def _apply(self, state: dict) -> list[str]:
        """Make this worker serve what `state` says (under the local lock); the sentences of what failed."""
        errors = []
        for name, entry in state["models"].items():
            version = entry["version"]
            self.versions[name] = max(self.versions.get(name, 0), version)
            local = self.server.served.get(name)
            if not entry["served"]:
                if local is not None:
                    del self.server.served[name]
                    await self._retire(local, None)
                self.states[name] = ("UNAVAILABLE", entry["reason"] or "unloaded")
            elif local is not None and local.version == str(version):
                self.states[name] = ("READY", entry["reason"])
            elif entry["file"]:
                try:
                    new = await asyncio.to_thread(self._load, Path(entry["file"]), str(version))
                except Exception as exc:  # noqa: BLE001 - any failure goes in the ack, for the caller to name
                    errors.append(f"loading {name!r} version {version} failed: {exc}")
                    continue
                await self._swap(name, new, entry["reason"])
        return errors

    async def _catch_up(self) -> int:
        async with self._lock_():
            state = self.shared.read()
            self.shared.ack(state["generation"], await self._apply(state))
        return state["generation"]

    async def _watch(self) -> None:
        applied = None
        while True:
            try:
                if self.shared.read()["generation"] != applied:
                    applied = await self._catch_up()
            except Exception:  # noqa: BLE001 - a bad read must not end watching
                _log.exception("applying the shared model state failed")
            await asyncio.sleep(WATCH_S)

    # ---- the app's lifespan -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the shared control (applying its state before the server accepts connections), start polling."""
        loop = asyncio.get_running_loop()
        if self.shared is not None:
            self.shared.ack(-1, [])  # from now on, loads wait for this worker
            await self._catch_up()
            self._tasks.append(loop.create_task(self._watch()))
        if self.control == "poll":
            self._tasks.append(loop.create_task(self.poll_forever()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.shared is not None:
            self.shared.leave()

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
                    await self.load(name, if_changed=True)
                except RequestError as exc:
                    _log.warning("%s", exc)
        for name in set(self._seen) - set(seen):
            try:
                await self.unload(name, quiet=True)
            except RequestError as exc:
                _log.warning("%s", exc)
        self._seen = seen

    async def poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.poll_once()
            except Exception:  # noqa: BLE001 - a bad scan must not end polling
                _log.exception("polling the model repository failed")


class _Failed(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason
