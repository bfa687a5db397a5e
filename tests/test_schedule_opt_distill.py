"""Phase 2 by distillation onto the fine reference path (fewstep.schedule_opt.distill)."""

import pytest
import torch

from _sampler_models import random_net
from fewstep.schedule_opt.distill import anchor_drift, finetune_on_path
from fewstep.schedule_opt.reference import discretisation_error, fine_reference
from fewstep.schedules import make_schedule

SCHEDULE = make_schedule("linear", 200)
TIMES = torch.tensor([199.0, 60.0, 12.0, -1.0])


@pytest.fixture(scope="module")
def teacher():
    model = random_net(seed=5)
    x_T = torch.randn(128, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return model, fine_reference(model, SCHEDULE, x_T)


@pytest.mark.parametrize("target", ["output", "path"])
def test_distillation_lowers_the_discretisation_error(teacher, target):
    model, ref = teacher
    before = discretisation_error(model, SCHEDULE, TIMES, ref.x_T, ref)["mse"]
    tuned = finetune_on_path(
        model, SCHEDULE, TIMES, ref, target=target, steps=60, lr=3e-3, batch_size=64, anchor=0.1, ema_decay=0.0
    )
    after = discretisation_error(tuned, SCHEDULE, TIMES, ref.x_T, ref)["mse"]
    assert after < 0.5 * before, (before, after)
    assert discretisation_error(model, SCHEDULE, TIMES, ref.x_T, ref)["mse"] == before  # the teacher is untouched


def test_anchor_holds_the_other_times(teacher):
    model, ref = teacher
    gen = torch.Generator().manual_seed(1)
    rows, fine = torch.randint(0, 128, (512,), generator=gen), torch.randint(0, 200, (512,), generator=gen)
    assert float(anchor_drift(model, ref, rows, fine)) < 1e-20
    drift = {}
    for anchor in (0.0, 10.0):
        tuned = finetune_on_path(
            model, SCHEDULE, TIMES, ref, steps=60, lr=3e-3, batch_size=64, anchor=anchor, ema_decay=0.0
        )
        drift[anchor] = float(anchor_drift(tuned, ref, rows, fine))
    assert drift[10.0] < 0.5 * drift[0.0], drift
