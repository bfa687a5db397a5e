"""Sample quality of images: Frechet distance and KID on features of a domain classifier.

FID (Heusel et al. 2017) is the Frechet distance between Gaussians fitted to network features of
real and generated images, ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2}); KID (Binkowski
et al. 2018) is the unbiased MMD^2 of the same features with the cubic kernel
(x.y / d + 1)^3, averaged over random subsets. Inception-v3 features mean little on 8x8 or 28x28
digits, so fewstep trains a small classifier on the data set's labels and uses its penultimate
layer (``num_features`` values), computed through torchmetrics' ``FrechetInceptionDistance`` and
``KernelInceptionDistance`` with that module as their custom ``feature``. Numbers are therefore
comparable between runs that share the classifier, not with published Inception FIDs. Inception
features are used only from a weights file the user supplies (nothing is downloaded).

Every score comes with the noise floor: the same metric between two disjoint halves of held-out
real images, the value a perfect sampler would get at that sample size.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from ..progress import bar as progress_bar

from ..checkpoint import load_checkpoint, load_module, module_tensors, save_checkpoint
from ..errors import FewstepError


class DigitClassifier(nn.Module):
    """A small CNN: three 3x3 conv layers (the last two of stride 2), average pooling to 2x2, a
    linear layer to ``num_features`` values with ReLU (the FID features, like Inception's pool
    layer), then a linear layer to the class logits."""

    def __init__(self, in_channels: int, num_classes: int = 10, width: int = 32, num_features: int = 64):
        super().__init__()
        self.num_features = num_features
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * width, num_features),
            nn.ReLU(),
        )
        self.head = nn.Linear(num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class FeatureExtractor(nn.Module):
    """The ``feature`` module handed to torchmetrics: images in [-1, 1] -> [B, num_features].

    Features are standardised by ``mean`` and ``std`` (those of the classifier's training images),
    so FID is in units of the real data's feature spread and KID's cubic kernel sees unit-scale
    inputs, whatever the classifier's activation scale.
    """

    def __init__(self, classifier: DigitClassifier, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.num_features = classifier.num_features
        self.register_buffer("mean", torch.zeros(self.num_features) if mean is None else mean.float())
        self.register_buffer("std", torch.ones(self.num_features) if std is None else std.float())

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.classifier.features(x.float()) - self.mean) / self.std

    @classmethod
    @torch.no_grad()
    def fitted(cls, classifier: DigitClassifier, images: torch.Tensor, batch_size: int = 1000) -> "FeatureExtractor":
        """The extractor standardised on ``images`` (std floored at 1e-3 of its mean for dead units)."""
        feats = torch.cat(
            [classifier.eval().features(images[i : i + batch_size].float()) for i in range(0, len(images), batch_size)]
        )
        std = feats.std(0)
        return cls(classifier, feats.mean(0), std.clamp(min=1e-3 * float(std.mean()) + 1e-12))


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = False,
    device: str = "cpu",
) -> DigitClassifier:
    """Fit a ``DigitClassifier`` with Adam and cross-entropy (light shift augmentation of 1 pixel) on ``device``."""
    if labels is None:
        raise FewstepError(
            "this data set has no labels to train the FID classifier on; supply Inception weights instead"
        )
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = DigitClassifier(images.shape[1], int(labels.max()) + 1).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in progress_bar(range(epochs), enabled=progress, desc="FID classifier", leave=False):
        perm = torch.randperm(len(images), generator=g)
        for start in range(0, len(images), batch_size):
            idx = perm[start : start + batch_size]
            dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
            x = torch.roll(images[idx], shifts=(dx, dy), dims=(2, 3)).to(device)
            loss = F.cross_entropy(model(x), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.cpu().eval()


@torch.no_grad()
def accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((model(images).argmax(1) == labels).float().mean())


def classifier_features(
    path: str | Path,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    epochs: int = 5,
    seed: int = 0,
    progress: bool = False,
    device: str = "cpu",
) -> FeatureExtractor:
    """The feature extractor of the classifier cached at ``path`` (safetensors), trained on
    ``images``/``labels`` and written there first when the file does not exist."""
    path = Path(path)
    shape = list(images.shape[1:])
    if path.is_file():
        tensors, meta = load_checkpoint(path)
        if meta.get("stage") != "fid-classifier" or meta.get("shape") != shape:
            raise FewstepError(
                f"{path} is not a FID classifier for images of shape {shape} "
                f"(it holds {meta.get('stage')} {meta.get('shape')})"
            )
        model = DigitClassifier(shape[0], meta["num_classes"])
        load_module(model, "classifier", tensors, str(path))
        return FeatureExtractor(model, tensors["stats.mean"], tensors["stats.std"])
    model = train_classifier(images, labels, epochs=epochs, seed=seed, progress=progress, device=device)
    extractor = FeatureExtractor.fitted(model, images)
    meta = {
        "stage": "fid-classifier",
        "shape": shape,
        "num_classes": model.head.out_features,
        "epochs": epochs,
        "seed": seed,
    }
    save_checkpoint(
        path, {**module_tensors("classifier", model), "stats.mean": extractor.mean, "stats.std": extractor.std}, meta
    )
    return extractor


class InceptionFeatures(nn.Module):
    """Inception-v3 pool features (2048) of images in [-1, 1], from a local FID weights file
    (``pt_inception-2015-12-05-6726825d.pth``) through torch-fidelity."""

    def __init__(self, weights_path: str | Path | None):
        super().__init__()
        if not weights_path or not Path(weights_path).is_file():
            raise FewstepError(
                f"Inception FID needs the FID Inception weights file (pt_inception-2015-12-05-6726825d.pth) on disk; "
                f"{weights_path!r} is not a file and fewstep downloads nothing. Use the classifier features instead"
            )
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3

            self.net = NoTrainInceptionV3(
                name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(weights_path)
            )
        except (ImportError, ModuleNotFoundError):
            raise FewstepError("Inception FID needs torch-fidelity (pip install torch-fidelity)") from None
        self.num_features = 2048

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return self.net(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)


def fid_kid(
    fake: torch.Tensor,
    real: torch.Tensor,
    features: nn.Module,
    kid_subsets: int = 50,
    kid_subset_size: int = 1000,
    seed: int = 0,
    batch_size: int = 500,
    device: str = "cpu",
) -> dict[str, float]:
    """FID and KID (mean over subsets) of ``fake`` against ``real`` images with ``features`` (run on ``device``)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    warnings.filterwarnings("ignore", message=".*will save all extracted features.*")

    n = min(len(fake), len(real))
    if n < 2:
        raise FewstepError(f"FID needs at least 2 images on each side; got {len(fake)} generated and {len(real)} real")
    fid = FrechetInceptionDistance(feature=features, normalize=True).to(device)
    kid = KernelInceptionDistance(
        feature=features, subsets=kid_subsets, subset_size=min(kid_subset_size, n), normalize=True
    ).to(device)
    for metric in (fid, kid):
        for images, is_real in ((real, True), (fake, False)):
            for start in range(0, len(images), batch_size):
                metric.update(images[start : start + batch_size].float().to(device), real=is_real)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from the global generator
        torch.manual_seed(seed)
        kid_mean, _ = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean)}
