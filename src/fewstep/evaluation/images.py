"""Image metrics: FID/KID and precision/recall/density/coverage on domain features.

Generated images are clamped to the data's pixel range [-1, 1] before their features are
computed, as they are when saved as images or returned by diffusers' ``DDPMPipeline`` (which
clamps), so a sampler scores the same through fewstep and through an exported pipeline. Samples
with NaN or infinite values score FID = KID = inf.

The feature network is a small classifier trained on the data set's labels (fewstep's default:
Inception-v3 features mean little on 8x8 or 28x28 digits) and cached under the fewstep cache
directory (``$FEWSTEP_CACHE``, default ``~/.cache/fewstep``), keyed by the data section; or
Inception-v3 from a local weights file (``evaluate.features``). Numbers on classifier features
are comparable between runs that share the data section, not with published Inception FIDs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import FewstepError
from .prdc import prdc


def cache_dir() -> Path:
    return Path(os.environ.get("FEWSTEP_CACHE", Path.home() / ".cache" / "fewstep"))


def feature_network(data, cfg, progress: bool = False, device: str = "cpu") -> torch.nn.Module:
    """The feature extractor of ``evaluate.features`` for this data set, on ``device``."""
    from ..images.fid import InceptionFeatures, classifier_features

    if cfg.features != "classifier":
        return InceptionFeatures(cfg.features).to(device)
    if data.train_labels is None:
        raise FewstepError(
            f"the {data.name} data has no labels to train the feature classifier on; set "
            "evaluate.features to the path of a local Inception weights file"
        )
    key = hashlib.sha1(json.dumps(vars(data.config), sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_dir() / "features" / f"{data.name}-{key}.safetensors"
    return classifier_features(path, data.train(), data.train_labels, progress=progress, device=device).to(device)


def image_metrics(
    fake: torch.Tensor,
    real: torch.Tensor,
    features: torch.nn.Module,
    neighbours: int = 5,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, float]:
    """FID, KID and the k-NN manifold metrics of ``fake`` against ``real`` images (features on ``device``)."""
    from ..images.fid import fid_kid

    if not torch.isfinite(fake).all():  # checked before clamping: a broken sampler must not look fine
        return {
            "fid": float("inf"),
            "kid": float("inf"),
            "precision": 0.0,
            "recall": 0.0,
            "density": 0.0,
            "coverage": 0.0,
        }
    fake = fake.clamp(-1, 1)  # the pixel range: what a saved image or DDPMPipeline's output holds
    scores = fid_kid(fake, real, features, seed=seed, kid_subset_size=min(1000, len(fake)), device=device)
    with torch.no_grad():
        f_fake = torch.cat([features(fake[i : i + 500].to(device)).cpu() for i in range(0, len(fake), 500)])
        f_real = torch.cat([features(real[i : i + 500].to(device)).cpu() for i in range(0, len(real), 500)])
    return {**scores, **prdc(f_real, f_fake, neighbours)}
