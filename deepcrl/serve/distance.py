"""Learned goal distances and planned actions over HTTP: ``POST /v1/distance`` and ``POST /v1/plan``.

Served beside the policies when the server is given a critic file (`deepcrl export --part critic`):

- ``POST /v1/distance``: ``{"observation": [obs], "goals": [[goal], ...]}`` (optionally ``"action"``: the
  action in phi(s, a), zeros by default) -> ``{"distances": [K], "timing": {...}}``, the critic's learned
  distance ||phi(s, a) - psi(g)|| to each goal (smaller: reached sooner; a rank, not metres). Up to
  `max_goals` goals per call. The goals' encodings are cached by the exact bytes of the goal block, so a robot
  asking again about the same candidate goals pays one phi call and K norms.
- ``POST /v1/plan`` (with ``--plan``): ``{"observation", "goal"}`` -> ``{"action", "waypoint", "landmark"}``:
  the robot sends only its final goal; the server plans over landmarks (`deepcrl.plan.planner`) and answers
  the default policy's action toward the current waypoint (through the same micro-batcher as /v1/act).
  Stateless: the server keeps no episode, so the eval-side patience (`PlannedPolicy`) does not apply; a
  robot that sees no progress toward the answered ``waypoint`` can fall back to /v1/act with its goal.

The same rules as /v1/act: bearer token, body limit (413), content types (415), JSON or msgpack both ways,
422 for well-formed but invalid bodies (sizes, NaN, too many goals), 404 when the server has no critic,
request counts and latency in /metrics (endpoints ``distance`` and ``plan``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

from deepcrl.serve import protocol
from deepcrl.serve.protocol import RequestError
from deepcrl.serve.shared import MEDIA, NEEDS_TOKEN, PolicyServer

MAX_GOALS = 4096
NO_CRITIC = "this server has no critic; start it with --critic FILE.onnx (`deepcrl export --part critic`)."


class DistanceModel:
    """An `OnnxCritic` with an LRU cache of goal-block encodings; `distances(obs, goals, action)` -> [K]."""

    def __init__(self, critic, cache_blocks: int = 64):
        self.critic = critic
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_blocks = cache_blocks

    def encode_goals(self, goals: np.ndarray) -> tuple[np.ndarray, bool]:
        key = goals.tobytes()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit, True
        psi = self.critic.psi(goals)
        self._cache[key] = psi
        if len(self._cache) > self._cache_blocks:
            self._cache.popitem(last=False)
        return psi, False

    def distances(self, obs: np.ndarray, goals: np.ndarray, action: np.ndarray | None = None):
        psi, cached = self.encode_goals(goals)
        phi = self.critic.phi(obs, action)
        return np.sqrt(np.square(psi - phi).sum(axis=1)), cached


def parse_distance(payload: Any, critic, max_goals: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate a decoded /v1/distance body: (observation [1, obs], goals [K, goal], action [1, act] or None)."""
    if not isinstance(payload, dict):
        raise RequestError(422, "the body must be a map with 'observation' and 'goals'.")
    for name in ("observation", "goals"):
        if name not in payload:
            raise RequestError(422, f"the body has no '{name}'.")
    goals = payload["goals"]
    if isinstance(goals, list) and not goals:
        raise RequestError(422, "'goals' is empty; send at least one goal.")
    if isinstance(goals, list) and len(goals) > max_goals:
        raise RequestError(422, f"'goals' has {len(goals)} rows but the server takes at most {max_goals} per request.")
    obs = protocol._vector_field(payload["observation"], "observation", critic.obs_size, False)
    goals = protocol._vector_field(goals, "goals", critic.goal_size, True)
    if not 1 <= len(goals) <= max_goals:
        raise RequestError(422, f"'goals' has {len(goals)} rows; send 1 to {max_goals}.")
    action = payload.get("action")
    if action is not None:
        action = protocol._vector_field(action, "action", critic.action_size, False)
    return obs, goals, action


def add_routes(app: FastAPI, server: PolicyServer, model: DistanceModel | None, planner=None,
               max_goals: int = MAX_GOALS) -> None:
    """Add ``POST /v1/distance`` (and ``POST /v1/plan`` when a `deepcrl.plan.planner.Planner` is given)."""
    metrics = server.metrics

    async def handle(request: Request, endpoint: str, work) -> Response:
        start = time.perf_counter()
        accept = request.headers.get("accept")
        fmt = protocol.reply_format(accept, "json")
        status, timed, headers = 200, False, {}
        metrics.in_flight.inc()
        try:
            if not server.authorized(request.headers):
                raise RequestError(401, NEEDS_TOKEN)
            in_fmt = protocol.body_format(request.headers.get("content-type"))
            fmt = protocol.reply_format(accept, in_fmt)
            if model is None or (endpoint == "plan" and planner is None):
                raise RequestError(404, NO_CRITIC if model is None else
                                   "this server does not plan; start it with --plan (and --critic FILE.onnx).")
            body = await server.read_body(request.receive, request.headers.get("content-length"))
            reply = await work(protocol.decode(body, in_fmt), fmt)
            timed = True
            total_us = (time.perf_counter() - start) * 1e6
            reply["timing"] = {"total_us": round(total_us, 1), **reply.get("timing", {})}
            content = protocol.encode(reply, fmt)
        except RequestError as exc:
            status, content = exc.status, server.error_body(exc, fmt)
            if status == 401:
                headers["www-authenticate"] = "Bearer"
        finally:
            metrics.in_flight.dec()
        metrics.observe(endpoint, fmt, status, (time.perf_counter() - start) if timed else None)
        return Response(content, status, headers=headers or None, media_type=MEDIA[fmt])

    async def distance_work(payload: Any, fmt: str) -> dict:
        obs, goals, action = parse_distance(payload, model.critic, max_goals)
        t = time.perf_counter()
        d, cached = model.distances(obs, goals, action)
        infer_us = (time.perf_counter() - t) * 1e6
        return {"distances": d.tolist(), "goals_cached": cached,
                "timing": {"infer_us": round(infer_us, 1)}}

    async def plan_work(payload: Any, fmt: str) -> dict:
        s = server.lookup(None)
        obs, goal, batched = protocol.parse_act(payload, s.model.obs_size, s.model.goal_size, s.batcher.max_batch)
        t = time.perf_counter()
        target, index = planner.waypoints(obs, goal)
        plan_us = (time.perf_counter() - t) * 1e6
        actions, timing, s = await server.infer(s, obs, target.astype(np.float32))
        reply = protocol.act_reply(actions.tolist(), batched)
        reply["waypoint" + ("s" if batched else "")] = target.tolist() if batched else target[0].tolist()
        reply["landmark" + ("s" if batched else "")] = index.tolist() if batched else int(index[0])
        reply["model_version"] = s.version
        reply["timing"] = {"plan_us": round(plan_us, 1), "queue_us": round(timing.queue_us, 1),
                           "infer_us": round(timing.infer_us, 1)}
        return reply

    @app.post("/v1/distance")
    async def distance(request: Request) -> Response:
        return await handle(request, "distance", distance_work)

    @app.post("/v1/plan")
    async def plan(request: Request) -> Response:
        return await handle(request, "plan", plan_work)


def load(critic_path, plan: dict | None = None):
    """(DistanceModel, Planner or None) for `create_app`. `plan`: None (no planning) or the planner's options
    (``landmarks``, ``cutoff``, ``cutoff_quantile``, ``seed``); landmarks come from the critic's env."""
    if critic_path is None:
        return None, None
    from deepcrl.plan.critic import OnnxCritic

    critic = OnnxCritic(critic_path)
    planner = None
    if plan is not None:
        from deepcrl import envs
        from deepcrl.plan.planner import Planner, coverage_landmarks

        opts = {"landmarks": 500, "cutoff": None, "cutoff_quantile": 0.07, "seed": 0, **plan}
        obs, goals = coverage_landmarks(envs.make(critic.env_id), opts["landmarks"], opts["seed"])
        planner = Planner(critic, obs, goals, cutoff=opts["cutoff"], cutoff_quantile=opts["cutoff_quantile"])
    critic.psi(np.zeros((4, critic.goal_size), np.float32))  # warm the session
    return DistanceModel(critic), planner
