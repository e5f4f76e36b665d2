"""Landmark planning with a contrastive critic ("search on the replay buffer", SoRB, over learned distances).

The critic's distance d(s, g) = ||phi(s, 0) - psi(g)|| (the energy's negation, action zero: one phi per
state, so a state's distances to all landmarks cost one encoder call and one norm per landmark) ranks how
soon g is reached from s. It is trustworthy only over short ranges, so:

1. **landmarks**: N states (env coverage: reset states, or any states given), each encoded once as a state
   (phi) and as a goal (psi);
2. **graph**: an edge i -> j weighted d(l_i, l_j) wherever that distance is at most the cutoff (default:
   a quantile of all landmark pairs' distances);
3. **all shortest paths once** (`scipy.sparse.csgraph.shortest_path`, Dijkstra from every node);
4. **per goal** (encoded once and cached): the cost to the goal from each landmark, min over the last
   landmark j of path(i, j) + d(l_j, g), over the j within the cutoff of g (the nearest one if none is);
5. **per step**: the waypoint is the landmark i minimising d(s, l_i) + cost(i) over the landmarks within
   the cutoff of s (the nearest if none is); the policy pursues the waypoint instead of the goal. A goal
   within the cutoff of s is pursued directly. `PlannedPolicy` adds patience: an episode stops choosing a
   landmark it has pursued for `patience` steps (a learned distance can be short across a wall).

An unreachable goal (no path from any landmark near s to any landmark near g: a disconnected graph) falls
back to pursuing the goal directly and is counted in `stats` (``unreachable_steps``); it is not refused,
because the policy may still reach it and a robot should not stop on a planner's gap.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import numpy as np

from deepcrl.errors import DeepcrlError


class Encoder(Protocol):
    """Anything with the critic's two encoders (`deepcrl.plan.build.JaxCritic`, `deepcrl.plan.critic.OnnxCritic`)."""

    obs_size: int
    goal_size: int

    def phi(self, observation: np.ndarray, action: np.ndarray | None = None) -> np.ndarray: ...

    def psi(self, goal: np.ndarray) -> np.ndarray: ...


def coverage_landmarks(env, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """N landmark states from the env's coverage: its reset states (a maze resets uniformly over free cells).

    Returns:
        (observations [n, obs], the goals they achieve [n, goal]).
    """
    import jax

    from deepcrl import envs

    if n < 1:
        raise DeepcrlError(f"the planner needs at least one landmark, got {n} (an empty landmark set).")
    spec = env.goal_spec
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(seed), n))
    obs, _ = envs.split_obs(spec, state.obs)
    return np.asarray(obs, np.float32), np.asarray(envs.achieved_goal(spec, obs), np.float32)


def _cdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [len(a), len(b)] (scipy's cdist; float32 result)."""
    from scipy.spatial.distance import cdist

    return cdist(a, b).astype(np.float32)


@dataclasses.dataclass
class PlanStats:
    """What the planner decided, counted over `Planner.waypoints` calls (one count per row)."""

    steps: int = 0
    """Rows planned."""
    direct_steps: int = 0
    """Rows whose goal was within the cutoff: the goal itself was pursued."""
    waypoint_steps: int = 0
    """Rows that pursued a landmark."""
    unreachable_steps: int = 0
    """Rows whose goal had no path in the landmark graph: the goal was pursued directly (the fallback)."""
    given_up_steps: int = 0
    """Rows of episodes that had given up on the plan (`PlannedPolicy`'s `give_up`): the goal was pursued."""
    goals_encoded: int = 0
    """Goals whose landmark costs were computed (the per-goal cache's misses)."""


class Planner:
    """Landmark graph over a critic's learned distances, its all-pairs shortest paths, and waypoints.

    Args:
        encoder: the critic's phi / psi.
        landmark_obs: [N, obs] landmark states; landmark_goals: [N, goal] the goals they achieve.
        cutoff: longest edge, in learned distance; None: the `cutoff_quantile` of all landmark pairs' distances.
        cutoff_quantile: used when `cutoff` is None.
        cache_goals: goals whose landmark costs are kept (least recently used dropped first).

    Raises:
        DeepcrlError: an empty landmark set, mismatched sizes, or a bad cutoff (one sentence).
    """

    def __init__(self, encoder: Encoder, landmark_obs: np.ndarray, landmark_goals: np.ndarray,
                 cutoff: float | None = None, cutoff_quantile: float = 0.07, cache_goals: int = 4096):
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import connected_components, shortest_path

        landmark_obs = np.asarray(landmark_obs, np.float32)
        landmark_goals = np.asarray(landmark_goals, np.float32)
        if landmark_obs.ndim != 2 or len(landmark_obs) == 0:
            raise DeepcrlError("the planner has no landmarks (an empty landmark set); give at least one state.")
        if landmark_obs.shape[1] != encoder.obs_size or landmark_goals.shape != (len(landmark_obs), encoder.goal_size):
            raise DeepcrlError(f"the landmarks have shapes {landmark_obs.shape} / {landmark_goals.shape}; the critic "
                               f"needs [N, {encoder.obs_size}] states and [N, {encoder.goal_size}] goals.")
        if not (0.0 < cutoff_quantile <= 1.0):
            raise DeepcrlError(f"the cutoff quantile must lie in (0, 1], got {cutoff_quantile}.")
        self.encoder = encoder
        self.landmark_obs, self.landmark_goals = landmark_obs, landmark_goals
        self.l_phi = np.asarray(encoder.phi(landmark_obs), np.float32)
        self.l_psi = np.asarray(encoder.psi(landmark_goals), np.float32)
        n = len(landmark_obs)
        self.pairwise = _cdist(self.l_phi, self.l_psi)  # [i, j] = d(l_i -> l_j)
        self._psi_t = np.ascontiguousarray(self.l_psi.T)
        self._psi_sq = np.square(self.l_psi).sum(axis=1)
        self._m2psi_t = np.ascontiguousarray(-2.0 * self._psi_t)  # the one-row path's |psi|^2 - 2 phi.psi
        off = self.pairwise[~np.eye(n, dtype=bool)]
        if cutoff is None:
            cutoff = float(np.quantile(off, cutoff_quantile)) if off.size else float(self.pairwise.max())
        if not (np.isfinite(cutoff) and cutoff > 0):
            raise DeepcrlError(f"the planner's cutoff must be a positive learned distance, got {cutoff}.")
        self.cutoff = float(cutoff)
        edges = (self.pairwise <= self.cutoff) & ~np.eye(n, dtype=bool)
        # csgraph reads a stored 0 as "no edge": learned distances are > 0, the floor only guards the format
        graph = csr_matrix((np.maximum(self.pairwise[edges], 1e-6), np.nonzero(edges)), shape=(n, n))
        self.edges = int(edges.sum())
        self.components = int(connected_components(graph, directed=True, connection="strong")[0])
        self.paths = shortest_path(graph, method="D", directed=True).astype(np.float32)  # [i, j], inf if none
        self.stats = PlanStats()
        self._cache: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_goals = int(cache_goals)

    def __len__(self) -> int:
        return len(self.landmark_obs)

    def _near(self, d: np.ndarray) -> np.ndarray:
        """Edge weights of rows of distances [B, N]: those within the cutoff, else each row's nearest only."""
        within = d <= self.cutoff
        if within.any(axis=1).all():  # the common case: every row has a landmark within the cutoff
            return np.where(within, d, np.inf)
        nearest = np.zeros_like(within)
        nearest[np.arange(len(d)), d.argmin(axis=1)] = True
        return np.where(within | (~within.any(axis=1, keepdims=True) & nearest), d, np.inf)

    def goal_costs(self, goals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(psi(goals) [B, repr], cost from every landmark to each goal [B, N]; inf where unreachable)."""
        goals = np.asarray(goals, np.float32)
        if goals.ndim != 2 or goals.shape[1] != self.encoder.goal_size:
            raise DeepcrlError(f"goal has shape {goals.shape}; the planner needs [batch, {self.encoder.goal_size}].")
        psi_g = np.asarray(self.encoder.psi(goals), np.float32)
        last = self._near(_cdist(psi_g, self.l_phi))  # [B, N]: d(l_j -> g_b) of the landmarks that enter g
        costs = np.empty_like(last)
        chunk = max(1, (1 << 22) // max(1, len(self) ** 2))
        for k in range(0, len(goals), chunk):  # min over j of paths[i, j] + last[b, j], in bounded memory
            costs[k:k + chunk] = (self.paths[None, :, :] + last[k:k + chunk, None, :]).min(axis=2)
        self.stats.goals_encoded += len(goals)
        return psi_g, costs

    def _cached(self, goals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`goal_costs` row by row through the LRU cache (a goal held for an episode is planned once)."""
        keys = [row.tobytes() for row in goals]
        miss = [i for i, k in enumerate(keys) if k not in self._cache]
        if miss:
            uniq = list(dict.fromkeys(keys[i] for i in miss))
            rows = np.stack([goals[keys.index(k)] for k in uniq])
            psi_g, costs = self.goal_costs(rows)
            for k, p, c in zip(uniq, psi_g, costs):
                self._cache[k] = (p, c)
        for k in keys:
            self._cache.move_to_end(k)
        while len(self._cache) > max(self._cache_goals, len(keys)):
            self._cache.popitem(last=False)
        psi_g = np.stack([self._cache[k][0] for k in keys])
        costs = np.stack([self._cache[k][1] for k in keys])
        return psi_g, costs

    def waypoints(self, observation: np.ndarray, goal: np.ndarray,
                  banned: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The goal each row should pursue now, and the landmark index pursued (-1: the goal itself).

        Args:
            observation: [B, obs]; goal: [B, goal] (the final goals; their costs are cached).
            banned: optional [B, N] bool, landmarks a row may not pursue (see `PlannedPolicy`'s patience).
        """
        observation = np.asarray(observation, np.float32)
        goal = np.asarray(goal, np.float32)
        if observation.ndim != 2 or observation.shape[1] != self.encoder.obs_size:
            raise DeepcrlError(f"observation has shape {observation.shape}; the planner needs "
                               f"[batch, {self.encoder.obs_size}].")
        if goal.ndim != 2 or len(goal) != len(observation):
            raise DeepcrlError(f"goal has shape {goal.shape}; the planner needs [{len(observation)}, "
                               f"{self.encoder.goal_size}].")
        if len(observation) == 1:
            return self._one(observation, goal, None if banned is None else banned[0])
        return self._batch(observation, goal, banned)

    def _batch(self, observation: np.ndarray, goal: np.ndarray, banned: np.ndarray | None):
        """`waypoints` for checked [B, ...] rows: [B, N] distances in one matmul, masks and one argmin per row."""
        psi_g, costs = self._cached(goal)
        phi_s = np.asarray(self.encoder.phi(observation), np.float32)
        direct = np.square(phi_s - psi_g).sum(axis=1) <= self.cutoff ** 2
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: one matmul (scipy's cdist costs more at one row); squared distances
        # are compared with the squared cutoff, so only the kept entries need a square root
        sq = np.square(phi_s).sum(axis=1, keepdims=True) + self._psi_sq[None, :] - 2.0 * (phi_s @ self._psi_t)
        near = sq <= self.cutoff ** 2
        total = np.sqrt(np.maximum(sq, 0.0, out=sq), out=sq)
        total += costs
        total[~near] = np.inf
        lost = ~near.any(axis=1)
        if lost.any():  # no landmark within the cutoff of s: its nearest one only (rare: landmarks cover the env)
            total[lost] = self._near(_cdist(phi_s[lost], self.l_psi)) + costs[lost]
        if banned is not None:
            total[banned] = np.inf
        best = total.argmin(axis=1)
        reachable = np.isfinite(total[np.arange(len(best)), best])
        unreachable = ~direct & ~reachable
        index = np.where(direct | unreachable, -1, best)
        out = np.where((index < 0)[:, None], goal, self.landmark_goals[np.maximum(index, 0)])
        s = self.stats
        n_direct, n_unreachable = int(direct.sum()), int(unreachable.sum())
        s.steps += len(goal)
        s.direct_steps += n_direct
        s.unreachable_steps += n_unreachable
        s.waypoint_steps += len(goal) - n_direct - n_unreachable
        return out, index

    def _one(self, observation: np.ndarray, goal: np.ndarray, banned: np.ndarray | None):
        """`waypoints` for one row (a robot's request): the same decision with a few numpy calls on the landmarks
        within the cutoff only (the batch path's [B, N] masks and copies cost more than the encoder at one row)."""
        hit = self._cache.get(goal.tobytes())
        if hit is None:
            self._cached(goal)
            hit = self._cache[goal.tobytes()]
        else:
            self._cache.move_to_end(goal.tobytes())
        psi_g, cost = hit
        phi = np.asarray(self.encoder.phi(observation), np.float32)[0]
        pp = float(phi @ phi)
        c2 = self.cutoff * self.cutoff
        s = self.stats
        s.steps += 1
        diff = phi - psi_g
        if float(diff @ diff) <= c2:
            s.direct_steps += 1
            return goal, np.array([-1])
        sq = phi @ self._m2psi_t
        sq += self._psi_sq  # |l|^2 - 2 phi.l: below c2 - |phi|^2 exactly where d(s, l) <= cutoff
        idx = np.flatnonzero(sq <= c2 - pp)
        if not len(idx):  # no landmark within the cutoff of s: its nearest one only
            idx = np.array([int(sq.argmin())])
        total = np.sqrt(np.maximum(sq[idx] + pp, 0.0))
        total += cost[idx]
        if banned is not None:
            total[banned[idx]] = np.inf
        k = int(total.argmin())
        if not np.isfinite(total[k]):
            s.unreachable_steps += 1
            return goal, np.array([-1])
        s.waypoint_steps += 1
        j = int(idx[k])
        return self.landmark_goals[j:j + 1], np.array([j])

    def summary(self) -> dict:
        """The graph's facts and the decisions counted so far."""
        return {"landmarks": len(self), "cutoff": self.cutoff, "edges": self.edges,
                "strong_components": self.components,
                "unreachable_landmark_pairs": int((~np.isfinite(self.paths)).sum()),
                **dataclasses.asdict(self.stats)}


class PlannedPolicy:
    """A goal-conditioned policy that pursues the planner's waypoint instead of the final goal.

    Same signature as every policy (``policy(observation, goal) -> action``), so `deepcrl.evaluate` runs it
    unchanged; `last_index` holds the landmark each row pursued at the last call (-1: the goal).

    Patience: a row that has pursued one landmark for `patience` steps of its episode (a row's episode lasts
    while its goal stays the same) stops choosing it. A learned distance can be short across a wall the policy
    cannot pass; without this the agent pushes against that wall for the rest of the episode, or oscillates
    between two such landmarks. 0 turns it off (the planner alone: stateless, as the server runs it).

    Give up (`give_up`, with patience): an episode that has run out of patience on that many landmarks stops
    planning and pursues its goal directly for the rest of the episode. A graph whose learned edges cross a wall
    around a dead end draws the agent from one landmark of the pocket to the next (seed 1 of point_maze_big:
    30-40 landmarks pursued, never leaving the pocket, on direct pairs the policy alone solves); the planner
    has then shown it is wrong for this episode and the policy is the better bet. 0 turns it off.
    """

    def __init__(self, policy, planner: Planner, patience: int = 0, give_up: int = 0):
        if patience < 0 or give_up < 0:
            raise DeepcrlError(f"patience and give_up must be 0 or more, got {patience} and {give_up}.")
        if give_up and not patience:
            raise DeepcrlError("give_up counts landmarks whose patience ran out; it needs a patience above 0.")
        self.policy, self.planner, self.patience, self.give_up = policy, planner, int(patience), int(give_up)
        for name in ("obs_size", "goal_size", "action_size"):
            if hasattr(policy, name):
                setattr(self, name, getattr(policy, name))
        self.last_index: np.ndarray | None = None
        self._goal: np.ndarray | None = None
        self._spent: np.ndarray | None = None

    def __call__(self, observation: np.ndarray, goal: np.ndarray) -> np.ndarray:
        banned = None
        if self.patience > 0:
            goal = np.asarray(goal, np.float32)
            if self._goal is None or self._goal.shape != goal.shape:
                self._spent = np.zeros((len(goal), len(self.planner)), np.int32)
            else:
                self._spent[(self._goal != goal).any(axis=1)] = 0  # a new goal: a new episode for that row
            self._goal = goal.copy()
            banned = self._spent >= self.patience
        target, self.last_index = self.planner.waypoints(observation, goal, banned)
        if self.give_up > 0:
            quit_ = (banned.sum(axis=1) >= self.give_up) & (self.last_index >= 0)
            if quit_.any():
                target = np.where(quit_[:, None], goal, target)
                self.last_index = np.where(quit_, -1, self.last_index)
                self.planner.stats.given_up_steps += int(quit_.sum())
                self.planner.stats.waypoint_steps -= int(quit_.sum())
        if self.patience > 0:
            rows = np.nonzero(self.last_index >= 0)[0]
            self._spent[rows, self.last_index[rows]] += 1
        return np.asarray(self.policy(observation, target), np.float32)
