"""W2 metrics against closed forms; POT's early stop is an error, not a silently wrong number."""

import math

import numpy as np
import pytest
import torch

from fewstep.config import load_config
from fewstep.errors import FewstepError
from fewstep.data import DataSource
from fewstep.evaluation import Evaluator, prdc
from fewstep.evaluation.points import sliced_w2, w2


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
    evaluator = Evaluator(DataSource(config.data), config.evaluate)
    result = evaluator.score_samples(far)
    assert {"model", "floor", "model_sd", "floor_sd", "n", "repeats", "data"} <= set(result)
    assert 0 < result["floor"]["w2"] < 0.2 < 4 < result["model"]["w2"]
    assert result["floor"]["precision"] > 0.9 and result["model"]["precision"] == 0.0
    assert evaluator.score_samples(far) == result  # fixed evaluation seeds


def test_repeats_give_a_mean_and_spread_over_independent_draws():
    config = load_config(None, ["data.name=moons", "evaluate.n_samples=200", "evaluate.repeats=3"])
    evaluator = Evaluator(DataSource(config.data), config.evaluate)
    draws = []

    def draw(n, r):
        draws.append(r)
        return torch.from_numpy(__import__("fewstep.data", fromlist=["moons"]).moons(n, 1000 + r)).float()

    _, result = evaluator.score(draw)
    assert draws == [0, 1, 2] and result["repeats"] == 3 and result["n"] == 200
    assert result["model_sd"]["w2"] > 0 and result["floor_sd"]["w2"] > 0
    # data against data: the model's figures sit at the floor
    assert abs(result["model"]["w2"] - result["floor"]["w2"]) < 3 * result["floor_sd"]["w2"] + 0.01


def test_floor_repeats_average_more_data_pairs_than_the_sample_draws():
    def evaluator(extra):
        config = load_config(None, ["data.name=moons", "evaluate.n_samples=200", *extra])
        return Evaluator(DataSource(config.data), config.evaluate)

    one = evaluator([])
    pairs = [one.metrics(*reversed(one.data.floor_pair(200, one._seed(r)))) for r in range(3)]
    far = torch.full((200, 2), 5.0)
    assert one.score_samples(far)["floor"]["w2"] == pytest.approx(pairs[0]["w2"])
    result = evaluator(["evaluate.floor_repeats=3"]).score_samples(far)
    assert result["repeats"] == 1 and result["floor_repeats"] == 3
    assert result["floor"]["w2"] == pytest.approx(np.mean([p["w2"] for p in pairs]))
    assert result["floor_sd"]["w2"] == pytest.approx(np.std([p["w2"] for p in pairs], ddof=1))
    # never fewer pairs than sample draws: the first pairs hold the draws the samples are scored against
    assert evaluator(["evaluate.repeats=2", "evaluate.floor_repeats=1"]).floor(200, 2)["floor_repeats"] == 2


def test_draw_r_and_floor_pair_r_share_their_data_draw():
    """Per-draw scores come back, and repeat r is scored against floor pair r's reference draw, so the
    two can be compared draw by draw (the benchmarks' paired differences rely on it)."""
    config = load_config(None, ["data.name=moons", "evaluate.n_samples=150", "evaluate.repeats=3"])
    evaluator = Evaluator(DataSource(config.data), config.evaluate)

    def second_of_pair(n, r):  # the other half of floor pair r: its score must be that pair's floor
        return evaluator.data.floor_pair(n, evaluator._seed(r))[1]

    _, result = evaluator.score(second_of_pair)
    assert len(result["draws"]) == 3 and len(result["floor_draws"]) == 3
    for model, floor in zip(result["draws"], result["floor_draws"]):
        assert model == pytest.approx(floor)
    assert result["model"]["w2"] == pytest.approx(np.mean([d["w2"] for d in result["draws"]]))
    assert len({d["w2"] for d in result["draws"]}) == 3  # three different draws, not one repeated


def test_prdc_closed_cases():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(500, 2, generator=g)
    same = prdc(real, real.clone(), k=5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    assert same["density"] == pytest.approx(1.0 + 1.0 / 5, abs=0.05)  # each point sits in its own ball too
    # a collapsed generator: every sample on the data, but covering almost none of it
    collapsed = real[:1].repeat(500, 1)
    scores = prdc(real, collapsed, k=5)
    assert scores["precision"] == 1.0 and scores["recall"] < 0.05 and scores["coverage"] < 0.05
    # samples off the data: 14% of them far from every point lowers precision by as much
    off = torch.cat([torch.randn(430, 2, generator=g), torch.full((70, 2), 40.0)])
    assert prdc(real, off, k=5)["precision"] == pytest.approx(0.86, abs=0.03)
