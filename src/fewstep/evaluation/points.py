"""Distances between point clouds: exact W2 (POT's network simplex) and sliced W2."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import FewstepError


def _as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    x = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    return x.reshape(len(x), -1).astype(np.float64)


def w2(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, max_iter: int = 10_000_000) -> float:
    """Exact Wasserstein-2 distance between two empirical distributions (uniform weights).

    Solved by POT's network simplex on the squared-Euclidean cost. POT's default of 100K
    iterations stops early at a few thousand points and returns a wrong value with only a
    warning; here the limit is raised and hitting it is an error.
    """
    import ot

    x, y = _as_numpy(x), _as_numpy(y)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("inf")
    cost = ot.dist(x, y, metric="sqeuclidean")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = ot.emd2(np.full(len(x), 1.0 / len(x)), np.full(len(y), 1.0 / len(y)), cost, numItermax=max_iter)
    for w in caught:
        if "numItermax" in str(w.message) or "did not converge" in str(w.message).lower():
            raise FewstepError(f"exact W2 did not converge in {max_iter} iterations; raise evaluate.max_iter")
    return float(np.sqrt(max(value, 0.0)))


def sliced_w2(
    x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, n_projections: int = 100, seed: int = 0
) -> float:
    """Sliced W2: the root mean over random directions of the 1-D squared W2 (POT)."""
    import ot

    x, y = _as_numpy(x), _as_numpy(y)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("inf")
    return float(ot.sliced_wasserstein_distance(x, y, n_projections=n_projections, p=2, seed=seed))
