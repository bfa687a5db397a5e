"""Precision, recall, density and coverage of generated samples (k-nearest-neighbour manifolds).

W2 at the noise floor can hide a few percent of samples far from the data; these four numbers see
them. With real points R (n), generated points F (m) and B(x, r) the ball of radius r around x,
and NND_k(x) the distance from x to its k-th nearest neighbour in its own set:

* precision = 1/m sum_j 1[F_j in some B(R_i, NND_k(R_i))]   (Kynkaanniemi et al. 2019): the share of
  samples on the data manifold;
* recall = 1/n sum_i 1[R_i in some B(F_j, NND_k(F_j))]      (ibid.): the share of data covered;
* density = 1/(k m) sum_j sum_i 1[F_j in B(R_i, NND_k(R_i))]   (Naeem et al. 2020): like precision,
  but counts how many real neighbourhoods hold each sample (1 on average for a perfect sampler);
* coverage = 1/n sum_i 1[the nearest F to R_i lies in B(R_i, NND_k(R_i))]   (ibid.).

Distances are computed in chunks, so memory stays O(chunk x n).
"""

from __future__ import annotations

import torch


def _pairwise_min_count(queries: torch.Tensor, points: torch.Tensor, radii: torch.Tensor, chunk: int):
    """For each query: is it inside any ball (points, radii), how many balls hold it, and its nearest point."""
    inside_any, count, nearest = [], [], []
    for start in range(0, len(queries), chunk):
        d = torch.cdist(queries[start : start + chunk], points)
        hit = d <= radii[None, :]
        inside_any.append(hit.any(1))
        count.append(hit.sum(1))
        nearest.append(d.min(1).values)
    return torch.cat(inside_any), torch.cat(count), torch.cat(nearest)


def kth_neighbour_distance(points: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance from each point to its k-th nearest neighbour among the others."""
    out = []
    for start in range(0, len(points), chunk):
        d = torch.cdist(points[start : start + chunk], points)
        out.append(d.kthvalue(k + 1, dim=1).values)  # the point itself is at distance 0
    return torch.cat(out)


@torch.no_grad()
def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = 5, chunk: int = 1024) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` (rows are points)."""
    real = real.detach().flatten(1).double().cpu()
    fake = fake.detach().flatten(1).double().cpu()
    if not torch.isfinite(fake).all():
        return {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    k = min(k, len(real) - 1, len(fake) - 1)
    real_radii = kth_neighbour_distance(real, k, chunk)
    fake_radii = kth_neighbour_distance(fake, k, chunk)
    on_manifold, holders, _ = _pairwise_min_count(fake, real, real_radii, chunk)
    covered, _, nearest_fake = _pairwise_min_count(real, fake, fake_radii, chunk)
    return {
        "precision": float(on_manifold.double().mean()),
        "recall": float(covered.double().mean()),
        "density": float(holders.double().sum() / (k * len(fake))),
        "coverage": float((nearest_fake <= real_radii).double().mean()),
    }
