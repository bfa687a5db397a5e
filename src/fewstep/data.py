"""Data sets: the paper's toys (Section 6.1, App. A), user arrays from files, and image sets.

:class:`DataSource` is the one way the rest of fewstep sees data: a training set, held-out draws
to score samples against, and pairs of independent draws for the noise floor. Toy generators are
pure functions of ``(n, seed)``, so training, evaluation and the floor use independent draws. A
finite set (a file, images) is split once, by ``data.seed``, into a training part and a held-out
part (``data.heldout_fraction``); evaluation and the floor only ever see the held-out part.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import FewstepError

TOY_DATASETS = ("swiss_roll", "moons", "gaussian")
IMAGE_DATASETS = ("digits", "mnist", "cifar10", "folder")


def swiss_roll(n: int, seed: int) -> np.ndarray:
    """scikit-learn's swiss roll (noise 0.05), coordinates 0 and 2, divided by 20."""
    from sklearn.datasets import make_swiss_roll

    x, _ = make_swiss_roll(n, noise=0.05, random_state=seed)
    return x[:, [0, 2]] / 20.0


def moons(n: int, seed: int) -> np.ndarray:
    """scikit-learn's two moons (noise 0.05), divided by 2, as an i.i.d. draw.

    ``make_moons(n)`` puts exactly n / 2 points on each moon, so two of its draws agree on the split
    exactly and their W2 (the noise floor) is lower than any sampler drawing points independently
    can reach (0.0072 against 0.0136 for i.i.d. draws at 10K points). Here the number on the outer
    moon is Binomial(n, 1/2), as for an i.i.d. sample of the mixture, and the points are shuffled.
    """
    from sklearn.datasets import make_moons

    rng = np.random.default_rng(seed)
    outer = int(rng.binomial(n, 0.5))
    x, _ = make_moons((outer, n - outer), noise=0.05, random_state=seed)
    return x[rng.permutation(n)] / 2.0


def gaussian(n: int, seed: int) -> np.ndarray:
    """The Gaussian cluster of App. A: centre (0.5, 0.5), standard deviation 0.01."""
    return np.random.default_rng(seed).normal(0.5, 0.01, size=(n, 2))


def toy_data(name: str, n: int, seed: int) -> torch.Tensor:
    """``n`` float32 points [n, 2] of the named toy data set."""
    makers = {"swiss_roll": swiss_roll, "moons": moons, "gaussian": gaussian}
    if name not in makers:
        raise FewstepError(f"unknown data set {name!r}; choose one of {', '.join(TOY_DATASETS)} or 'file'")
    return torch.from_numpy(makers[name](n, seed)).float()


def load_array(path: str | Path) -> torch.Tensor:
    """A user array [N, D] of finite numbers from .npy, .npz (a single array) or .csv (no header)."""
    path = Path(path)
    if path.is_dir():
        raise FewstepError(f"data file {path} is a directory; give an .npy, .npz or .csv file")
    if not path.is_file():
        raise FewstepError(f"data file {path} does not exist")
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if len(archive.files) != 1:
                    raise FewstepError(f"data file {path} holds {len(archive.files)} arrays; expected exactly one")
                array = archive[archive.files[0]]
        elif path.suffix == ".csv":
            array = np.loadtxt(path, delimiter=",", ndmin=2)
        else:
            raise FewstepError(f"data file {path} has suffix {path.suffix!r}; expected .npy, .npz or .csv")
    except FewstepError:
        raise
    except Exception as exc:  # numpy's own messages are clear but multi-part: keep one line
        raise FewstepError(f"cannot read data file {path}: {str(exc).splitlines()[0]}") from None
    if array.ndim != 2 or array.shape[0] < 4 or array.shape[1] < 1:
        raise FewstepError(f"data file {path} has shape {array.shape}; expected [N, D] with N >= 4 points")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise FewstepError(f"data file {path} has dtype {array.dtype}; expected real numbers")
    if not np.isfinite(array).all():
        raise FewstepError(f"data file {path} contains NaN or infinite values")
    return torch.from_numpy(array.astype(np.float32))


class DataSource:
    """Training examples, held-out draws and noise-floor pairs for a ``DataConfig``."""

    def __init__(self, config):
        self.config = config
        self.name = config.name
        self._train: torch.Tensor | None = None
        self._heldout: torch.Tensor | None = None
        self.train_labels: torch.Tensor | None = None
        if config.name in TOY_DATASETS:
            return
        if config.name == "file":
            everything, labels = load_array(config.path), None
        elif config.name in IMAGE_DATASETS:
            from .images.data import load_images

            everything, labels = load_images(config.name, config.path, config.image_size)
        else:
            raise FewstepError(f"unknown data set {config.name!r}")
        perm = torch.randperm(len(everything), generator=torch.Generator().manual_seed(config.seed))
        n_heldout = int(round(config.heldout_fraction * len(everything)))
        if 0 < n_heldout < 4:
            raise FewstepError(
                f"data.heldout_fraction={config.heldout_fraction} holds out {n_heldout} of "
                f"{len(everything)} examples; at least 4 are needed (or 0 to score on training data)"
            )
        train_idx, heldout_idx = perm[n_heldout:], perm[:n_heldout]
        self._train = everything[train_idx]
        self._heldout = everything[heldout_idx] if n_heldout else self._train
        self.train_labels = labels[train_idx] if labels is not None else None

    @property
    def is_toy(self) -> bool:
        return self.name in TOY_DATASETS

    @property
    def kind(self) -> str:
        """``points`` (vectors) or ``images`` ([C, H, W]): it decides the metrics and figures."""
        return "images" if len(self.shape) == 3 else "points"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train().shape[1:])

    def train(self) -> torch.Tensor:
        """The training set (the toy draw of ``data.seed``, or a finite set's training split), made once."""
        if self._train is None:
            self._train = toy_data(self.name, self.config.n_train, self.config.seed)
        return self._train

    def max_eval_size(self) -> int | None:
        """The largest n of a floor pair (half the held-out split); None for toys (unlimited)."""
        return None if self._heldout is None else len(self._heldout) // 2

    def floor_pair(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent data samples A, B of equal size (at most ``n``).

        Samples are scored against A; the noise floor is B against A. Toys draw both fresh; a
        finite set takes two disjoint random halves of its held-out split.
        """
        if self._heldout is None:
            return toy_data(self.name, n, seed), toy_data(self.name, n, seed + 1)
        perm = torch.randperm(len(self._heldout), generator=torch.Generator().manual_seed(seed))
        half = min(n, len(self._heldout) // 2)
        return self._heldout[perm[:half]], self._heldout[perm[half : 2 * half]]

    def describe(self) -> str:
        """The data set and its split, for reports."""
        if self._heldout is None:
            return f"{self.name} (toy; training draw of {self.config.n_train}, fresh draws for evaluation)"
        held = "no held-out split" if self._heldout is self._train else f"{len(self._heldout)} held out"
        return f"{self.name} ({len(self._train)} training examples, {held})"
