"""Model control shared by the workers of ``deepcrl serve --workers N`` (explicit and poll modes).

Each worker is its own process with its own sessions, and the kernel hands a load or unload call to any one of
them. So that the call takes effect on every worker, they share a control directory (made by the parent, named
to the workers in ``DEEPCRL_SERVE_CONTROL_DIR``, removed when the server exits):

- ``state.json``: the desired state, ``{"generation": g, "models": {name: entry}}``, replaced atomically. An
  entry says whether the model is served, at which version, from which snapshot file, with which index
  ``reason``, and the source file's (mtime, size) signature that poll mode compares. Only the names a call (or
  the poller) changed since the start have an entry; the others are served as every worker loaded them.
- ``models/<g>/<name>.onnx``: the snapshot a load copied from the repository and validated. Every worker loads
  these very bytes, even if the repository file changes meanwhile; a snapshot no state names any more is removed
  once every worker has applied the newer one.
- ``workers/<id>.json``: one per live worker, the last generation it applied and what failed (its ack).
- ``lock``: an exclusive ``flock`` held for the whole of one load or unload, so calls on different workers
  happen one after the other.

The answering worker takes the lock, catches up with the state, validates the new version (builds and warms
up its session; a failure publishes only the index reason, so no worker serves anything else), swaps it in,
publishes the next generation, and answers once every other live worker has acked it, or names the workers
that did not. Every worker watches ``state.json`` (`WATCH_S`) and applies each new generation
(`Repository.apply`). A worker that starts later (SIGHUP, a replaced worker) applies the state before it
accepts connections. The files are tiny JSON read every few milliseconds; inotify would save the reads but is
not in the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from deepcrl.serve.protocol import RequestError

CONTROL_DIR_ENV = "DEEPCRL_SERVE_CONTROL_DIR"
"""Environment variable naming the control directory the parent shares with its workers."""
WATCH_S = 0.02
"""How often a worker looks for a new generation of the state."""
APPLY_TIMEOUT_S = 60.0
"""How long a load or unload waits for every worker to apply it before answering which did not."""
_ids = itertools.count()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


class SharedControl:
    """One worker's handle on the shared control directory `root` (created if missing)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.id = f"{os.getpid()}.{next(_ids)}"  # several apps in one process (tests) are distinct workers
        for sub in ("workers", "models"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ---- the desired state ------------------------------------------------------------------------------------

    def read(self) -> dict:
        try:
            return json.loads((self.root / "state.json").read_text())
        except FileNotFoundError:
            return {"generation": 0, "models": {}}

    def publish(self, state: dict, name: str, entry: dict) -> int:
        """Write the next generation of `state` with `entry` for `name`; returns that generation."""
        generation = state["generation"] + 1
        _write_json(self.root / "state.json", {"generation": generation, "models": {**state["models"], name: entry}})
        return generation

    def snapshot(self, path: Path, name: str, generation: int) -> Path:
        """Copy the repository file `path` to where every worker will load it from."""
        dest = self.root / "models" / str(generation) / f"{name}.onnx"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        return dest

    def prune(self) -> None:
        """Remove the snapshots the current state no longer names (call once every worker applied it)."""
        keep = {str(Path(e["file"]).parent) for e in self.read()["models"].values() if e.get("file")}
        for folder in (self.root / "models").iterdir():
            if str(folder) not in keep:
                shutil.rmtree(folder, ignore_errors=True)

    @contextlib.asynccontextmanager
    async def locked(self, timeout_s: float | None = None):
        """Hold the exclusive control lock (polled without blocking, so the event loop keeps serving)."""
        timeout_s = 2 * APPLY_TIMEOUT_S if timeout_s is None else timeout_s
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            give_up = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > give_up:
                        raise RequestError(503, "another worker's load or unload has held the model repository for "
                                                f"{timeout_s:.0f} s; retry later.") from None
                    await asyncio.sleep(0.01)
            yield
        finally:
            os.close(fd)  # releases the lock

    # ---- workers and their acks -------------------------------------------------------------------------------

    def ack(self, generation: int, errors: list[str]) -> None:
        """Record that this worker applied `generation` (with what failed)."""
        _write_json(self.root / "workers" / f"{self.id}.json", {"generation": generation, "errors": errors})

    def leave(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / "workers" / f"{self.id}.json").unlink()

    async def wait_applied(self, generation: int, timeout_s: float | None = None) -> dict[str, str]:
        """Wait until every other live worker has applied `generation`: ``{worker id (pid.n): what went wrong}``
        for those that did not, or failed to."""
        timeout_s = APPLY_TIMEOUT_S if timeout_s is None else timeout_s
        give_up = time.monotonic() + timeout_s
        while True:
            problems: dict[str, str] = {}
            waiting = False
            for path in (self.root / "workers").glob("*.json"):
                worker = path.stem
                if worker == self.id:
                    continue
                if not _alive(int(worker.split(".")[0])):
                    path.unlink(missing_ok=True)  # killed without leaving: the supervisor replaces it
                    continue
                try:
                    ack = json.loads(path.read_text())
                except (FileNotFoundError, ValueError):
                    continue  # it just left
                if ack["generation"] < generation:
                    waiting = True
                    problems[worker] = f"did not apply it within {timeout_s:g} s"
                elif ack["errors"]:
                    problems[worker] = "; ".join(ack["errors"])
            if not waiting or time.monotonic() > give_up:
                return problems
            await asyncio.sleep(WATCH_S / 2)


def signature(path: Path) -> list[int] | None:
    """A repository file's (mtime, size), as poll mode compares them; None when it is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]


def check_load_parameters(parameters: Any) -> None:
    """Refuse (400) what a load call may carry but this server does not do: a config or model files sent with it
    (Triton's ``config`` and ``file:<path>`` parameters); others (``unload_dependents``) are accepted."""
    if not isinstance(parameters, dict):
        raise RequestError(400, "the body's 'parameters' must be a map.")
    sent = sorted(k for k in parameters if k == "config" or str(k).startswith("file:"))
    if sent:
        raise RequestError(400, f"this server loads models only from its repository (--model); a load cannot "
                                f"carry {', '.join(repr(k) for k in sent)}.")
