"""The toy benchmarks pool several fine-tuning runs (training seeds), each scored over the same R
draws, into one figure: its mean and spread must be those of all S x R figures taken together,
and the seed spread that of the runs' means (benchmarks/_toy_common.py, ``pooled``)."""

import statistics

import pytest

from _benchmarks import benchmark_module


@pytest.fixture(scope="module")
def common():
    with benchmark_module("_toy_common") as module:
        yield module


def result(values: list[float]) -> dict:
    """One run's result as the Evaluator returns it, from its R per-draw W2 figures."""
    return {
        "model": {"w2": statistics.mean(values)},
        "model_sd": {"w2": statistics.stdev(values) if len(values) > 1 else 0.0},
        "draws": [{"w2": v} for v in values],
        "floor": {"w2": 0.01},
        "floor_sd": {"w2": 0.001},
        "repeats": len(values),
        "n": 100,
    }


def test_pooled_equals_the_statistics_of_every_figure(common):
    runs = [[0.020, 0.023, 0.019], [0.025, 0.027, 0.030], [0.018, 0.017, 0.021]]
    pooled = common.pooled([result(v) for v in runs])
    every = [x for v in runs for x in v]
    assert pooled["model"]["w2"] == pytest.approx(statistics.mean(every), rel=1e-12)
    assert pooled["model_sd"]["w2"] == pytest.approx(statistics.stdev(every), rel=1e-12)
    assert pooled["model_seed_sd"]["w2"] == pytest.approx(statistics.stdev([statistics.mean(v) for v in runs]))
    assert pooled["seeds"] == 3 and pooled["repeats"] == 3  # draws per run, runs counted apart
    assert pooled["floor"] == {"w2": 0.01}  # the floor does not depend on the training seed
    assert [[d["w2"] for d in seed] for seed in pooled["draws_by_seed"]] == runs  # every draw kept, per seed


def test_one_run_pools_to_itself(common):
    pooled = common.pooled([result([0.020, 0.023, 0.019])])
    assert pooled["model_sd"]["w2"] == pytest.approx(statistics.stdev([0.020, 0.023, 0.019]))
    assert pooled["model_seed_sd"]["w2"] == 0.0


def test_paired_difference_is_taken_per_shared_draw(common):
    # two seeds of 3 draws (per-draw means 2, 3, 4) against a floor of 4 pairs, only the first 3 shared
    first, floor = [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]], [1.0, 1.0, 1.0, 9.0]
    gap = common.paired(first, floor)
    assert gap["R"] == 3 and gap["mean"] == pytest.approx(2.0)
    assert gap["se"] == pytest.approx(statistics.stdev([1.0, 2.0, 3.0]) / 3**0.5)
    assert gap["t"] == pytest.approx(2.0 / gap["se"])
    margin = common.paired(first, floor, factor=1.10)
    assert margin["mean"] == pytest.approx(3.0 - 1.10)


def test_pairing_removes_the_shared_draws_spread(common):
    # both samplers' figures ride on the data draw's own level; their difference does not
    draw_level = [0.017, 0.029, 0.021, 0.024, 0.019]
    ours = [[x + 0.002 for x in draw_level]]
    theirs = [[x + 0.006 + 0.0001 * i for i, x in enumerate(draw_level)]]
    gain = common.paired(theirs, ours)
    assert gain["mean"] == pytest.approx(0.0042)
    assert gain["se"] < 1e-4 < statistics.stdev(draw_level) / 5**0.5
