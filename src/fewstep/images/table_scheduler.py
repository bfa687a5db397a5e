"""A diffusers scheduler that steps through a fewstep step table: the tuned sampler in diffusers alone.

This file depends on torch and diffusers only: ``fewstep export`` copies it into the pipeline folder
(``scheduler/fewstep_scheduler.py``) and names it in ``model_index.json``, so that

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained("tuned-pipeline", trust_remote_code=True)
    images = pipe(batch_size=16, generator=torch.Generator().manual_seed(0)).images

samples with the fine-tuned few-step sampler without fewstep installed (diffusers loads a scheduler
shipped as a file in the folder only with ``trust_remote_code=True``; with fewstep installed,
``DDPMPipeline(unet=UNet2DModel.from_pretrained(folder, subfolder="unet"),
scheduler=FewstepScheduler.from_pretrained(folder, subfolder="scheduler"))`` needs no remote code).

Step k of the table (k = 0..K-1, from noise towards data) maps ``x`` to

    x_next = a[k] x + b[k] eps + c[k] eps_prev + d[k] x_prev + s[k] z,   z ~ N(0, I),

where ``eps`` is the model output at time ``t[k]`` and ``eps_prev``, ``x_prev`` the model output and
input of step k - 1 (multistep solvers). With ``clip_x0 = r`` the mean is computed in posterior form
from the x0-prediction clipped to [-r, r] (diffusers' ``clip_sample``). The arithmetic is that of
``fewstep.rollout.step_mean`` operation for operation, so for the same network, initial noise and
step noise the samples equal fewstep's. The table fixes the steps: ``num_inference_steps`` is
ignored (``DDPMPipeline`` passes 1000 by default).
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

COLUMNS = ("t", "a", "b", "c", "d", "s", "alpha_bar")


class FewstepScheduler(SchedulerMixin, ConfigMixin):
    """Steps through a recorded step table (see the module docstring).

    Config: ``num_train_timesteps`` and ``trained_betas`` (the model's noise schedule, for
    ``add_noise``), ``table`` (the columns t, a, b, c, d, s, alpha_bar in step order, ``clip_x0``,
    ``name``, ``settings``), and ``base_scheduler`` (the DDPMScheduler config the model was trained
    with, kept for tools that rebuild it).
    """

    order = 1
    _compatibles: list = []

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        trained_betas: list | None = None,
        table: dict | None = None,
        prediction_type: str = "epsilon",
        base_scheduler: dict | None = None,
    ):
        if table is None:
            raise ValueError("FewstepScheduler needs a step table (the `table` entry of its config)")
        if prediction_type != "epsilon":
            raise ValueError(f"FewstepScheduler steps epsilon-predictions, not {prediction_type!r}")
        columns = {}
        for name in COLUMNS:
            values = table.get(name)
            if values is None and name in ("c", "d"):
                values = [0.0] * len(table["t"])
            if values is None or len(values) != len(table["t"]):
                raise ValueError(f"the step table's column {name!r} is missing or has the wrong length")
            columns[name] = torch.tensor(values, dtype=torch.float64)
        self.columns = columns
        self.clip_x0 = table.get("clip_x0")
        self.multistep = bool((columns["c"] != 0).any() or (columns["d"] != 0).any())
        if self.clip_x0 is not None and self.multistep:
            raise ValueError("clip_x0 needs a first-order table (c = d = 0)")
        betas = torch.tensor(trained_betas, dtype=torch.float64) if trained_betas is not None else None
        self.alphas_cumprod = torch.cumprod(1.0 - betas, 0).float() if betas is not None else None
        self.init_noise_sigma = 1.0
        self.num_inference_steps = len(table["t"])
        self.timesteps = columns["t"].float()
        self._state = None

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None, **_):
        """The table's model times (decreasing; ``num_inference_steps`` is ignored: the table fixes them)."""
        self.timesteps = self.columns["t"].float().to(device)
        self._state = None

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def _index(self, timestep) -> int:
        t = float(timestep)
        matches = [
            k for k, v in enumerate(self.columns["t"].tolist()) if math.isclose(v, t, rel_tol=1e-6, abs_tol=1e-4)
        ]
        if not matches:
            raise ValueError(f"time-step {t} is not one of the table's: {self.columns['t'].tolist()}")
        return matches[0]

    def _column(self, name: str, k: int, like: torch.Tensor) -> torch.Tensor:
        return self.columns[name][k].to(device=like.device, dtype=like.dtype)

    def step(
        self,
        model_output: torch.Tensor,
        timestep,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ):
        """One step of the table from ``sample`` given the model's epsilon-prediction ``model_output``."""
        k = self._index(timestep)
        x, eps = sample, model_output.to(sample.dtype)
        a, b = self._column("a", k, x), self._column("b", k, x)
        if self.clip_x0 is None:
            mean = a * x + b * eps
        else:
            alpha_bar = self._column("alpha_bar", k, x)
            sigma = (1 - alpha_bar).sqrt()
            x0 = ((x - sigma * eps) / alpha_bar.sqrt()).clamp(-self.clip_x0, self.clip_x0)
            mean = (a + b / sigma) * x - b * (alpha_bar / (1 - alpha_bar)).sqrt() * x0
        if self.multistep:
            if self._state is not None:
                eps_prev, x_prev = self._state
                mean = mean + self._column("c", k, x) * eps_prev + self._column("d", k, x) * x_prev
            self._state = (eps, x)
        std = float(self.columns["s"][k])
        if std > 0:
            z = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            prev = mean + std * z
        else:
            prev = mean
        if k == len(self.columns["t"]) - 1:
            self._state = None
        if not return_dict:
            return (prev,)
        return SchedulerOutput(prev_sample=prev)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise at integer ``timesteps`` (training use)."""
        if self.alphas_cumprod is None:
            raise ValueError("add_noise needs trained_betas in the scheduler config")
        ab = self.alphas_cumprod.to(original_samples.device)[timesteps.long()].to(original_samples.dtype)
        ab = ab.view(-1, *([1] * (original_samples.ndim - 1)))
        return ab.sqrt() * original_samples + (1 - ab).sqrt() * noise
