"""Exact minimisation of a sum over consecutive pairs by dynamic programming (and brute force, for tests).

A schedule with fixed endpoints is a path grid[0] = g_first -> ... -> g_last through K edges on
a grid of M candidate points ordered from noise to data. When the objective is a sum of edge
costs ``cost[u, v]`` (u before v), the cheapest path with exactly K edges is found exactly in
O(K M^2) by the Bellman recursion best[k, v] = min_u best[k-1, u] + cost[u, v].
"""

from __future__ import annotations

import itertools

import torch

from ..errors import FewstepError


def min_cost_path(cost: torch.Tensor, K: int) -> tuple[list[int], float]:
    """Indices 0 = i_0 < i_1 < ... < i_K = M-1 minimising sum_k cost[i_k, i_{k+1}], and the minimum.

    ``cost`` is [M, M]; only entries with u < v are used (others may hold anything).
    """
    M = cost.shape[0]
    if K < 1 or K > M - 1:
        raise FewstepError(f"cannot place {K} steps on a grid of {M} candidate points")
    cost = cost.to(torch.float64)
    upper = torch.triu(torch.ones(M, M, dtype=torch.bool), diagonal=1)
    edge = torch.where(upper, cost, torch.full_like(cost, float("inf")))
    best = torch.full((M,), float("inf"), dtype=torch.float64)
    best[0] = 0.0
    parents = []
    for _ in range(K):
        total = best[:, None] + edge  # [u, v]
        best, parent = total.min(dim=0)
        parents.append(parent)
    if not torch.isfinite(best[M - 1]):
        raise FewstepError("no finite-cost path through the grid")
    path = [M - 1]
    for parent in reversed(parents):
        path.append(int(parent[path[-1]]))
    return path[::-1], float(best[M - 1])


def brute_force_path(cost: torch.Tensor, K: int) -> tuple[list[int], float]:
    """The same optimum by enumerating every subset of K-1 interior points (small grids only)."""
    M = cost.shape[0]
    best, best_path = float("inf"), None
    for interior in itertools.combinations(range(1, M - 1), K - 1):
        path = [0, *interior, M - 1]
        total = sum(float(cost[u, v]) for u, v in zip(path[:-1], path[1:]))
        if total < best:
            best, best_path = total, path
    return best_path, best
