"""The one training loop's divergence back-off (``Stage.retries``, ``finetune.divergence_retries``)."""

from __future__ import annotations

import json

import pytest
import torch

from fewstep.config import load_config
from fewstep.errors import Diverged
from fewstep.runs import Run
from fewstep.training.loop import Part, Stage, train


def _stage(tmp_path, retries: int):
    """8 steps of SGD at lr 1; a held-out score that blows up when the last step ran above lr 0.25."""
    net = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    seen = []

    def step(i: int) -> dict:
        seen.append((i, optimizer.param_groups[0]["lr"]))
        return {}

    def evaluate(model) -> dict:
        return {"score": 1e6 if seen and seen[-1][1] > 0.25 else 1.0}

    config = load_config(None, [])
    run = Run(tmp_path, config, "pretrain").start()
    stage = Stage(
        "toy",
        {"net": Part(net, optimizer)},
        "net",
        8,
        config,
        (1,),
        torch.Generator().manual_seed(0),
        eval_every=4,
        checkpoint_every=2,
        evaluate=evaluate,
        evaluate_at_start=True,
        watch="score",
        retries=retries,
    )
    return run, stage, step, seen


def test_divergence_goes_back_to_the_last_checkpoint_with_half_the_learning_rate(tmp_path):
    run, stage, step, seen = _stage(tmp_path, retries=2)
    train(run, stage, step, progress=False)
    # diverged at the evaluation of step 4 twice: back to the checkpoint of step 2 at lr 0.5, then 0.25
    assert seen == [(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0), (2, 0.5), (3, 0.5), *[(i, 0.25) for i in range(2, 8)]]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    events = [r for r in records if "event" in r]
    assert [(r["step"], r["lr"]) for r in events] == [(2, 0.5), (2, 0.25)]
    assert "held-out score" in events[0]["event"] and "went back to step 2" in events[0]["event"]
    assert [r["step"] for r in records if "score" in r] == [0, 4, 8]  # the discarded evaluations are dropped


def test_divergence_stops_when_the_retries_are_spent(tmp_path):
    run, stage, step, seen = _stage(tmp_path, retries=1)
    with pytest.raises(Diverged, match=r"held-out score .*the last good checkpoint is .*toy.safetensors \(step 2\)"):
        train(run, stage, step, progress=False)
    assert seen[-1] == (3, 0.5)
