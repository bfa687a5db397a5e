"""Image data sets as float32 tensors [N, C, H, W] in [-1, 1] (App. F.2 trains in [-1, 1]: FastDPM's
[0, 1] rescaling hurt the critic), with their integer labels where the format has them.

* ``digits``: scikit-learn's bundled 8x8 digits (1797 images, values 0..16), the embedded default.
* ``mnist``: IDX files (``train-images-idx3-ubyte`` / ``t10k-images-idx3-ubyte``, gzipped or not).
* ``cifar10``: the python batches (``data_batch_1..5``, ``test_batch``), read with a restricted
  unpickler that can only rebuild numpy arrays, dicts, lists, strings and numbers.
* ``folder``: every PNG/JPEG under a directory (e.g. CelebA), centre-cropped to a square.

Any reader takes any directory; ``image_size`` resizes (area averaging, or Lanczos for files).
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import FewstepError

IMAGE_DATASETS = ("digits", "mnist", "cifar10", "folder")
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def to_unit_range(images: np.ndarray, max_value: float = 255.0) -> torch.Tensor:
    """Pixel values in [0, max_value] -> float32 in [-1, 1]."""
    return torch.from_numpy(np.asarray(images, dtype=np.float32) * (2.0 / max_value) - 1.0)


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX array (the MNIST format: 2 zero bytes, a dtype byte, ndim, big-endian uint32 sizes)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise FewstepError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise FewstepError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != expected:
        raise FewstepError(f"IDX file {path} holds {len(body)} bytes of data; its header {dims} needs {expected}")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _find(directory: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for name in (stem, stem + ".gz"):
            if (directory / name).is_file():
                return directory / name
    return None


def load_mnist(directory: str | Path, split: str = "train") -> tuple[torch.Tensor, torch.Tensor | None]:
    """MNIST-format images [N, 1, 28, 28] and labels from ``directory``.

    ``split`` is ``train`` or ``test``; ``train`` falls back to the test files when only those
    are present (the repository ships the 10K test set).
    """
    directory = _directory(directory, "MNIST")
    files = {
        "train": (
            ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
            ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
        ),
        "test": (
            ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
            ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
        ),
    }
    images = _find(directory, files[split][0])
    if images is None and split == "train":
        split, images = "test", _find(directory, files["test"][0])
    if images is None:
        raise FewstepError(f"no MNIST IDX image file (train-images-idx3-ubyte[.gz] or t10k-...) in {directory}")
    x = read_idx(images)
    if x.ndim != 3:
        raise FewstepError(f"MNIST image file {images} has shape {x.shape}; expected [N, H, W]")
    labels_file = _find(directory, files[split][1])
    y = torch.from_numpy(read_idx(labels_file).astype(np.int64)) if labels_file else None
    if y is not None and len(y) != len(x):
        raise FewstepError(f"{labels_file} has {len(y)} labels for {len(x)} images")
    return to_unit_range(x[:, None]), y


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds only numpy arrays (plus the dicts, lists, bytes and numbers pickle encodes natively).

    Any other global (``os.system``, ``builtins.eval``, ...) is refused, so a crafted file cannot
    run code.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def load_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: uint8 images [N, 3, 32, 32] and labels [N]."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise FewstepError(f"{path} is not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise FewstepError(f"{path} is not a CIFAR-10 python batch (no data/labels entries)")
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise FewstepError(f"{path} holds data of shape {data.shape} ({data.dtype}); expected uint8 [N, 3072]")
    return data.reshape(-1, 3, 32, 32), np.asarray(batch[b"labels"], dtype=np.int64)


def load_cifar10(directory: str | Path, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 images [N, 3, 32, 32] and labels from the python batches in ``directory``
    (or its ``cifar-10-batches-py`` sub-folder)."""
    directory = _directory(directory, "CIFAR-10")
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    paths = [directory / n for n in names if (directory / n).is_file()]
    if not paths:
        raise FewstepError(f"no CIFAR-10 python batches ({', '.join(names[:2])}, ...) in {directory}")
    batches = [load_cifar_batch(p) for p in paths]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    return to_unit_range(x), torch.from_numpy(y)


def load_folder(directory: str | Path, image_size: int | None = None) -> torch.Tensor:
    """Every .png/.jpg/.jpeg under ``directory`` (sorted), RGB, centre-cropped to a square and,
    with ``image_size``, resized (Lanczos): [N, 3, S, S]."""
    from PIL import Image, UnidentifiedImageError

    directory = _directory(directory, "image")
    paths = sorted(p for p in directory.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not paths:
        raise FewstepError(f"no PNG or JPEG images in {directory}")
    arrays = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                w, h = im.size
                s = min(w, h)
                im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                if image_size is not None:
                    im = im.resize((image_size, image_size), Image.LANCZOS)
                arrays.append(np.asarray(im))
        except (UnidentifiedImageError, OSError) as exc:
            raise FewstepError(f"cannot read image {p}: {exc}") from None
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise FewstepError(f"images in {directory} have different sizes {sorted(sizes)[:3]}; set data.image_size")
    return to_unit_range(np.stack(arrays).transpose(0, 3, 1, 2))


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits [1797, 1, 8, 8] (values 0..16) and labels."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    return to_unit_range(bunch.images[:, None], max_value=16.0), torch.from_numpy(bunch.target.astype(np.int64))


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Square images resized by area averaging (down) or bilinear interpolation (up)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    mode = "area" if size < images.shape[-1] else "bilinear"
    return F.interpolate(images, size=(size, size), mode=mode).clamp(-1, 1)


def load_images(name: str, path: str | None = None, image_size: int | None = None, split: str = "train"):
    """Images [N, C, H, W] in [-1, 1] and labels (or None) of a named image data set."""
    if name == "digits":
        x, y = load_digits()
    elif path is None:
        raise FewstepError(f"data set {name!r} needs data.path (a directory)")
    elif name == "mnist":
        x, y = load_mnist(path, split)
    elif name == "cifar10":
        x, y = load_cifar10(path, split)
    elif name == "folder":
        return load_folder(path, image_size), None
    else:
        raise FewstepError(f"unknown image data set {name!r}; choose one of {', '.join(IMAGE_DATASETS)}")
    return (resize(x, image_size) if image_size else x), y


def _directory(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FewstepError(f"{what} data directory {path} does not exist or is not a directory")
    return path
