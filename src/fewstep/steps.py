"""Every sampler as a table of step coefficients.

Step ``k`` (``k = 0..K-1``, from noise towards data) maps ``x`` to

    x_next = a[k] x + b[k] eps(x, t[k]) + c[k] eps_prev + d[k] x_prev + s[k] z,   z ~ N(0, I),

where ``eps(x, t)`` is the epsilon-model evaluated at model time ``t[k]``, and ``eps_prev`` and
``x_prev`` are the model output and the input of step ``k - 1`` (zero at step 0). First-order
samplers have ``c = d = 0``: step k is then the Gaussian p_theta(x_t | x_{t+1}) of paper eq. 3 with
mean ``a x + b eps`` and covariance ``s^2 I``. The multistep columns serve DPM-Solver(2M) (``c``)
and DPM-Solver++(2M) (``c`` and ``d``).

``clip_x0`` reproduces diffusers' ``clip_sample``: the mean is rewritten in its posterior form
``q x + p x0_hat`` with ``x0_hat = (x - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)`` and
x0_hat is clipped to ``[-clip_x0, clip_x0]`` before it is used (:func:`fewstep.rollout.step_mean`).
The step stays Gaussian, so it can still be scored and fine-tuned.

The builders live in :mod:`fewstep.samplers`; this module holds the table and its JSON record.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .errors import FewstepError

COLUMNS = ("t", "a", "b", "c", "d", "s", "alpha_bar")


@dataclass(frozen=True)
class StepTable:
    """Per-step coefficients, float64 tensors of length K in step order (see the module docstring).

    ``alpha_bar[k]`` is the signal level of step k's input, ``t[k]`` its model time (decreasing
    along the table; :attr:`timesteps` gives them increasing); ``name`` says which sampler built
    the table and ``settings`` how.
    """

    name: str
    t: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    s: torch.Tensor
    alpha_bar: torch.Tensor
    c: torch.Tensor | None = None
    d: torch.Tensor | None = None
    clip_x0: float | None = None
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        K = self.t.shape[0]
        for name in ("c", "d"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, torch.zeros(K, dtype=torch.float64))
        for name in COLUMNS:
            column = getattr(self, name)
            if not torch.is_tensor(column) or column.shape != (K,):
                raise FewstepError(
                    f"step table column {name} has shape {tuple(getattr(column, 'shape', ()))}, expected ({K},)"
                )
            if not torch.isfinite(column).all():
                raise FewstepError(f"step table column {name} holds NaN or infinite values")
        if K == 0:
            raise FewstepError("a step table needs at least one step")
        if (self.s < 0).any():
            raise FewstepError("step table column s (noise std) must be >= 0")
        if self.clip_x0 is not None and (self.clip_x0 <= 0 or not self.is_markov):
            raise FewstepError("clip_x0 needs a positive range and a first-order (c = d = 0) table")

    @property
    def K(self) -> int:
        return int(self.t.shape[0])

    @property
    def timesteps(self) -> torch.Tensor:
        """The model times, increasing (data end first)."""
        return self.t.flip(0)

    @property
    def is_markov(self) -> bool:
        """True when every step depends only on its input (no eps_prev / x_prev terms)."""
        return bool((self.c == 0).all() and (self.d == 0).all())

    @property
    def is_fully_stochastic(self) -> bool:
        """True when every step has positive variance, so every step has a log-density."""
        return bool((self.s > 0).all())

    @property
    def scoreable(self) -> bool:
        """True when every step is a Gaussian with a log-density: what policy gradient needs."""
        return self.is_markov and self.is_fully_stochastic


def steps_from(table: StepTable, k: int) -> StepTable:
    """Steps k, ..., K - 1 of a first-order table as a table of their own: its chain starts from x_k, the
    input of step k (re-running a chain from a stored state, e.g. to see which step decides its end).

    A multistep table's step k also reads step k - 1's output, so it has no such tail.
    """
    if not table.is_markov:
        raise FewstepError(f"the {table.name} table is multistep: its steps from {k} on cannot start from x_{k} alone")
    if not 0 <= k < table.K:
        raise FewstepError(f"step {k} is outside the table's steps 0..{table.K - 1}")
    return replace(table, **{name: getattr(table, name)[k:] for name in COLUMNS})


def table_to_dict(table: StepTable) -> dict:
    """A JSON-able record of a table (saved in checkpoints so a run samples as it was tuned)."""
    return {
        "name": table.name,
        "settings": table.settings,
        "clip_x0": table.clip_x0,
        **{name: getattr(table, name).tolist() for name in COLUMNS},
    }


def table_from_dict(record: dict, source: str = "the checkpoint") -> StepTable:
    """The table of a record written by :func:`table_to_dict`; ``source`` names the file in errors."""
    try:
        cols = {name: torch.tensor(record[name], dtype=torch.float64) for name in COLUMNS if name in record}
        missing = [name for name in ("t", "a", "b", "s", "alpha_bar") if name not in cols]
        if missing:
            raise KeyError(missing[0])
        return StepTable(
            name=str(record["name"]), settings=dict(record.get("settings", {})), clip_x0=record.get("clip_x0"), **cols
        )
    except FewstepError as exc:
        raise FewstepError(f"the step table recorded in {source} is malformed: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FewstepError(f"the step table recorded in {source} is malformed (bad or missing {exc})") from None
