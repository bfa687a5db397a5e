"""W2 metrics against closed forms; POT's early stop is an error, not a silently wrong number."""
import math

import numpy as np
import pytest
import torch

from fewstep.config import load_config
from fewstep.errors import FewstepError
from fewstep.evaluation import evaluate_samples
from fewstep.metrics import sliced_w2, w2


def test_w2_one_dimensional_is_sorted_matching():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 1)), rng.standard_t(3, size=(400, 1))
    expected = math.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2))
    assert w2(x, y) == pytest.approx(expected, rel=1e-9)


def test_w2_of_a_translation_is_its_length():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 2))
    shift = np.array([0.3, -0.4])
    assert w2(x, x + shift) == pytest.approx(0.5, rel=1e-9)
    assert w2(torch.from_numpy(x), torch.from_numpy(x)) == pytest.approx(0.0, abs=1e-6)  # sqrt of float rounding
    # sliced W2 of a translation: sqrt(E[(theta . v)^2]) = |v| / sqrt(2) in 2-D, up to the 100-direction average
    assert sliced_w2(x, x + shift, n_projections=100, seed=0) == pytest.approx(0.5 / math.sqrt(2), rel=0.15)


def test_w2_iteration_limit_is_an_error():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(1500, 2)), rng.normal(size=(1500, 2))
    with pytest.raises(FewstepError, match="did not converge"):
        w2(x, y, max_iter=1000)
    assert w2(x, y) > 0


def test_non_finite_samples_score_infinity():
    x = np.zeros((10, 2))
    y = x.copy()
    y[3, 1] = np.nan
    assert w2(x, y) == float("inf") and sliced_w2(x, y) == float("inf")


def test_evaluation_reports_the_noise_floor():
    config = load_config(None, ["evaluate.n_samples=300"])
    far = torch.full((300, 2), 5.0)
    result = evaluate_samples(far, config)
    assert set(result) == {"model", "floor"}
    assert 0 < result["floor"]["w2"] < 0.2 < 4 < result["model"]["w2"]
    assert evaluate_samples(far, config) == result  # fixed evaluation seeds
