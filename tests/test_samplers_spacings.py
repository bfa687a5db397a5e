"""Spacings and the continuous model time of a discrete schedule."""

import pytest
import torch

from fewstep.errors import FewstepError
from fewstep.samplers import SPACINGS, alpha_bar_at, spacing, time_at_alpha_bar
from fewstep.samplers.spacings import round_distinct
from fewstep.schedules import make_schedule


def test_alpha_bar_at_integers_and_inverse():
    schedule = make_schedule("linear", 1000)
    idx = torch.tensor([0, 1, 17, 500, 999])
    assert torch.allclose(alpha_bar_at(schedule, idx.double()), schedule.alpha_bar[idx])
    assert alpha_bar_at(schedule, -1.0) == 1.0
    t = torch.tensor([-0.7, 0.0, 3.25, 640.5, 999.0], dtype=torch.float64)
    assert torch.allclose(time_at_alpha_bar(schedule, alpha_bar_at(schedule, t)), t, atol=1e-9)
    mid = alpha_bar_at(schedule, 10.5)
    assert mid == pytest.approx(float((schedule.alpha_bar[10] * schedule.alpha_bar[11]).sqrt()))


@pytest.mark.parametrize("name", SPACINGS)
def test_spacings_are_increasing_with_endpoints(name):
    schedule = make_schedule("linear", 1000)
    t = spacing(name, schedule, 7, t_min=2.0, t_max=950.0)
    assert len(t) == 7 and t[0] == 2.0 and t[-1] == 950.0 and (t.diff() > 0).all()


def test_spacing_formulas():
    schedule = make_schedule("cosine", 1000)
    lam = lambda t: 0.5 * (alpha_bar_at(schedule, t) / (1 - alpha_bar_at(schedule, t))).log()  # noqa: E731
    ls = lam(spacing("logsnr", schedule, 6))
    assert torch.allclose(ls.diff(), ls.diff()[:1].expand(5), rtol=1e-6)
    ab = alpha_bar_at(schedule, spacing("karras", schedule, 6))
    root = ((1 - ab) / ab).sqrt() ** (1 / 7)
    assert torch.allclose(root.diff(), root.diff()[:1].expand(5), rtol=1e-6)
    q = spacing("quadratic", schedule, 5)
    assert torch.allclose(q, torch.tensor([0, 1 / 16, 1 / 4, 9 / 16, 1], dtype=torch.float64) * 999)


def test_round_distinct_and_errors():
    assert round_distinct(torch.tensor([0.0, 0.2, 0.4, 5.0])).tolist() == [0, 1, 2, 5]
    schedule = make_schedule("linear", 100)
    with pytest.raises(FewstepError):
        spacing("cubic", schedule, 4)
    with pytest.raises(FewstepError):
        spacing("uniform", schedule, 4, t_min=50, t_max=10)
