"""Polish a schedule on the measured discretisation error of a batch of starts (coordinate search).

The path bound of :mod:`.path_bound` is a sum over intervals, so its DP minimum is global, but it
is only an upper bound: Minkowski's inequality drops the cancellation between the errors of
different intervals, and the flow Jacobian stands in for the sampler's. Its minimiser is therefore
a good starting point, not the minimiser of the error itself. The error itself,

    E(t) = mean over the starts of ||sampler(t; x_T) - X(-1)||^2 / d

(:func:`.reference.output_error`, against the fine reference path), costs K model evaluations
per start and couples all times, so it is polished locally: each interior time in turn moves to
the integer time between its neighbours that minimises E (a scan of ``candidates`` evenly spaced
times, then every time around the best one), sweeping until a sweep changes nothing or
``max_sweeps`` is reached. E never increases. It works for any deterministic sampler given as
``run(times, x_T)``, e.g. DPM-Solver++(2M) on the times, and needs no training data; the starts
should be independent of those the schedule is evaluated on.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import FewstepError
from .optimise import ScheduleResult
from .reference import FineReference, ddim_output, output_error


def _scan(lo: int, hi: int, candidates: int) -> list[int]:
    """Up to ``candidates`` evenly spaced integers strictly between lo and hi."""
    if hi - lo < 2:
        return []
    return sorted(set(torch.linspace(lo + 1, hi - 1, min(candidates, hi - lo - 1)).round().long().tolist()))


def coordinate_refine(
    error: Callable[[torch.Tensor], float], times, candidates: int = 32, max_sweeps: int = 4
) -> ScheduleResult:
    """Coordinate search of ``error(times)`` over integer interior times (endpoints fixed).

    ``times`` decrease (integers); returns the best times found, their error and one history
    entry per sweep.
    """
    best_times = torch.as_tensor(times, dtype=torch.float64).clone()
    if (best_times != best_times.round()).any() or (best_times[1:] >= best_times[:-1]).any():
        raise FewstepError(f"refinement needs strictly decreasing integer times, got {best_times.tolist()}")
    best = error(best_times)
    history = [{"sweep": 0, "error": best, "times": best_times.tolist()}]
    for sweep in range(1, max_sweeps + 1):
        changed = False
        for j in range(1, len(best_times) - 1):
            lo, hi = int(best_times[j + 1]), int(best_times[j - 1])
            coarse = _scan(lo, hi, candidates)
            for pool in (coarse, None):
                if pool is None:  # every time around the best coarse point
                    width = max(1, (hi - lo) // max(1, candidates))
                    centre = int(best_times[j])
                    pool = [t for t in range(centre - width, centre + width + 1) if lo < t < hi]
                for t in pool:
                    if t == int(best_times[j]):
                        continue
                    trial = best_times.clone()
                    trial[j] = t
                    value = error(trial)
                    if value < best:
                        best, best_times, changed = value, trial, True
        history.append({"sweep": sweep, "error": best, "times": best_times.tolist()})
        if not changed:
            break
    return ScheduleResult(best_times, best, history)


def refine_ddim(
    model, schedule, times, reference: FineReference, candidates: int = 32, max_sweeps: int = 4
) -> ScheduleResult:
    """Polish DDIM times (ending at -1, clean data) on the discretisation error from ``reference``'s starts."""
    return coordinate_refine(
        lambda t: output_error(ddim_output(model, schedule, t, reference.x_T), reference), times, candidates, max_sweeps
    )
