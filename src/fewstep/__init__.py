"""fewstep: make pretrained diffusion models sample well in few steps.

    import fewstep

    model = fewstep.load("runs/moons/checkpoints/pretrain.safetensors")   # or a diffusers pipeline folder
    config = fewstep.finetune_config(model, overrides=["finetune.iterations=2000"])
    tuned, run = fewstep.finetune(model, config, run_dir="runs/moons-sft")
    x = fewstep.sample(tuned, 10_000, seed=0)
    print(fewstep.evaluate(tuned)["model"])

The names below are the public API; everything else is internal and may change. Attributes are
imported on first use, so ``import fewstep`` (and ``fewstep --help``) stays fast.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load": "api",
    "pretrain": "api",
    "finetune": "api",
    "finetune_config": "api",
    "sample": "api",
    "evaluate": "api",
    "sampler_table": "api",
    "export": "api",
    "Config": "config",
    "load_config": "config",
    "Pretrained": "pretrained",
    "StepTable": "steps",
    "NoiseSchedule": "schedules",
    "make_schedule": "schedules",
    "build_table": "samplers",
    "for_policy_gradient": "samplers",
    "ddpm_table": "samplers",
    "ddim_table": "samplers",
    "fastdpm_table": "samplers",
    "analytic_dpm_table": "samplers",
    "dpm_solver_2m_table": "samplers",
    "dpm_solver_pp_2m_table": "samplers",
    "rollout": "rollout",
    "step_log_prob": "rollout",
    "Evaluator": "evaluation",
    "FewstepError": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'fewstep' has no attribute {name!r}")


def __dir__():
    return __all__
