"""Fault injection: pretraining and fine-tuning runs killed with SIGKILL at random points (5 kills
each, forked child processes running the command line) and resumed end bit-identical to
uninterrupted runs: every tensor of every checkpoint (weights, EMA, optimiser state, random
generator state) is equal, the metrics are the same valid JSON lines, and no temporary file is
left. The driver is benchmarks/fault_injection.py (run it for more kills)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "fault_injection.py"


@pytest.fixture(scope="module")
def driver():
    spec = importlib.util.spec_from_file_location("fault_injection", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked children and SIGKILL")
def test_killed_runs_resume_bit_identical(driver, tmp_path):
    results = driver.inject(kills=5, seed=1, workdir=tmp_path)
    for stage, outcome in results["stages"].items():
        assert len(outcome["kills"]) == 5, (stage, outcome)
        assert outcome["tensors_compared"] > 0 and not outcome["tensors_different"], (stage, outcome)
        assert outcome["metrics_equal"], stage
        assert not outcome["temporaries_left_at_end"], (stage, outcome)
        assert outcome["summary_written"], stage
    # the kills landed while training, not only before it started
    assert any(k["checkpoint_step"] for k in results["stages"]["pretrain"]["kills"])
    assert any(k["checkpoint_step"] for k in results["stages"]["finetune"]["kills"])
