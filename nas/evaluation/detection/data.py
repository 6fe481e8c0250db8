"""COCO-format object-detection datasets: an image folder plus an ``instances_*.json`` annotation file.

The annotation file holds ``images`` (``id``, ``file_name``), ``annotations`` (``image_id``, ``category_id``,
``bbox`` as ``[x, y, w, h]`` in pixels, optional ``iscrowd``) and ``categories`` (``id``, optional ``name``).
Category ids, which need not be contiguous, map to labels 1..C in ascending id order; label 0 is the detector's
background. Crowd annotations are skipped, as SSD-style training does.

Images are resized (not cropped or padded) to a square ``image_size``; boxes are returned normalised to the image
side, which a plain resize leaves unchanged. Problems with the files are reported as `DatasetError` with one line
naming the file and the field.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nas.evaluation.data import IMAGENET_MEAN, IMAGENET_STD, DatasetError

_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32)
_STD = np.asarray(IMAGENET_STD, dtype=np.float32)


def _field(record: Any, key: str, where: str, path: Path, kind: type) -> Any:
    """``record[key]`` checked for presence and type, or a one-line DatasetError naming file and field."""
    if not isinstance(record, dict):
        raise DatasetError(f"annotation file {path}: {where} must be a JSON object, got {type(record).__name__}")
    if key not in record:
        raise DatasetError(f"annotation file {path}: {where} has no field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DatasetError(f"annotation file {path}: {where}.{key} must be {kind.__name__}, got {value!r:.60}")
    return value


def read_annotations(path: str | Path) -> dict:
    """Read and check a COCO ``instances_*.json`` file.

    Args:
        path: the annotation file.

    Returns:
        ``{"images": [(image_id, file_name)], "categories": [(category_id, name)] sorted by id,
        "boxes": {image_id: [(category_id, [x, y, w, h])]}}`` with crowd annotations left out.

    Raises:
        DatasetError: the file is missing, not JSON, or lacks a field or has one of the wrong type.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"annotation file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"annotation file {path} is not valid JSON ({exc})") from None
    images = [(_field(im, "id", f"images[{i}]", path, int), _field(im, "file_name", f"images[{i}]", path, str))
              for i, im in enumerate(_field(data, "images", "the top level", path, list))]
    categories = []
    for i, cat in enumerate(_field(data, "categories", "the top level", path, list)):
        category_id = _field(cat, "id", f"categories[{i}]", path, int)
        categories.append((category_id, str(cat.get("name", category_id))))
    categories.sort()
    image_ids, category_ids = {i for i, _ in images}, {c for c, _ in categories}
    for name, ids, n in (("images", image_ids, len(images)), ("categories", category_ids, len(categories))):
        if len(ids) != n:
            raise DatasetError(f"annotation file {path}: {name} has {n - len(ids)} duplicate id(s)")
    annotations = _field(data, "annotations", "the top level", path, list)
    return {"images": images, "categories": categories,
            "boxes": _read_boxes(annotations, image_ids, category_ids, path)}


def _read_boxes(annotations: list, image_ids: set[int], category_ids: set[int], path: Path) -> dict[int, list]:
    """The non-crowd ``(category_id, [x, y, w, h])`` boxes of each image, every annotation checked."""
    boxes: dict[int, list] = {i: [] for i in image_ids}
    for i, ann in enumerate(annotations):
        where = f"annotations[{i}]"
        image_id = _field(ann, "image_id", where, path, int)
        category_id = _field(ann, "category_id", where, path, int)
        bbox = _field(ann, "bbox", where, path, list)
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise DatasetError(f"annotation file {path}: {where}.bbox must be 4 numbers [x, y, w, h], got {bbox!r:.60}")
        if image_id not in image_ids:
            raise DatasetError(f"annotation file {path}: {where}.image_id {image_id} is not in images")
        if category_id not in category_ids:
            raise DatasetError(f"annotation file {path}: {where}.category_id {category_id} is not in categories")
        if not ann.get("iscrowd", 0):
            boxes[image_id].append((category_id, [float(v) for v in bbox]))
    return boxes


class CocoDetection(Dataset):
    """A COCO-format detection dataset resized to ``image_size`` squares.

    Items are ``(image, target)``: ``image`` a float tensor ``(3, S, S)`` normalised with the ImageNet mean and
    std, and ``target`` a dict with ``boxes`` ``(K, 4)`` float normalised xyxy, ``labels`` ``(K,)`` long in
    1..C, ``image_id`` (int, the annotation file's id) and ``orig_size`` ``(h, w)`` long tensor of the file's
    image. Boxes that are empty after clipping to the image are dropped.

    Args:
        image_dir: folder holding the images named by ``file_name``.
        annotation_file: the ``instances_*.json`` file.
        image_size: side of the square the images are resized to.
        train: apply the training augmentation (a random horizontal flip with probability `flip_prob`, drawn
            from torch's global RNG so a seeded run repeats it).
        flip_prob: probability of the flip when `train` is true.
        cache: keep each image decoded and resized (uint8, ``S * S * 3`` bytes) after its first read, so later
            epochs skip the file and the resize: the same items, several times faster to load. Decoding is a
            large share of a short training run on a GPU, where the model's own steps are quick.

    Attributes:
        class_names: category names in label order (``class_names[0]`` is label 1).
        category_ids: COCO category id of each label, in the same order.
        num_classes: C, the number of object classes.

    Raises:
        DatasetError: the folder or annotation file is missing or malformed, or an image file is missing.
    """

    def __init__(
        self, image_dir: str | Path, annotation_file: str | Path, image_size: int, *, train: bool = False,
        flip_prob: float = 0.5, cache: bool = False,
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
        self.image_dir = Path(image_dir).expanduser()
        self.annotation_file = Path(annotation_file).expanduser()
        if not self.image_dir.is_dir():
            raise DatasetError(f"image folder {self.image_dir} does not exist or is not a directory")
        info = read_annotations(self.annotation_file)
        self.image_size, self.train, self.flip_prob = image_size, train, flip_prob
        self._cache: dict[int, tuple[np.ndarray, int, int]] | None = {} if cache else None
        self.category_ids = [c for c, _ in info["categories"]]
        self.class_names = [name for _, name in info["categories"]]
        self.num_classes = len(self.category_ids)
        label_of = {c: i + 1 for i, c in enumerate(self.category_ids)}
        self._items = [
            (image_id, self.image_dir / name, [(label_of[c], box) for c, box in info["boxes"][image_id]])
            for image_id, name in info["images"]
        ]
        missing = [str(p) for _, p, _ in self._items if not p.is_file()]
        if missing:
            raise DatasetError(f"annotation file {self.annotation_file}: {len(missing)} image file(s) missing "
                               f"from {self.image_dir}, e.g. {missing[0]}")

    def __len__(self) -> int:
        return len(self._items)

    @property
    def in_memory(self) -> bool:
        """Whether images are kept decoded after their first read."""
        return self._cache is not None

    def keep_in_memory(self) -> None:
        """From now on keep each image decoded and resized after its first read (the `cache` argument)."""
        if self._cache is None:
            self._cache = {}

    def _read(self, index: int) -> tuple[np.ndarray, int, int]:
        """(resized uint8 RGB pixels, original width, original height) of image `index`."""
        from PIL import Image

        if self._cache is not None and index in self._cache:
            return self._cache[index]
        path = self._items[index][1]
        try:
            with Image.open(path) as img:
                w, h = img.size
                img = img.convert("RGB").resize((self.image_size, self.image_size), Image.BILINEAR)
        except OSError as exc:                   # PIL's UnidentifiedImageError and truncated files are OSErrors
            raise DatasetError(f"image {path} cannot be read ({exc})") from None
        out = (np.asarray(img, dtype=np.uint8), w, h)
        if self._cache is not None:
            self._cache[index] = out
        return out

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image_id, _, objects = self._items[index]
        rgb, w, h = self._read(index)
        # NumPy rather than torch: per-image tensor ops are small enough that intra-op threading only costs.
        pixels = (rgb.astype(np.float32) / 255.0 - _MEAN) / _STD
        boxes, labels = _normalised_boxes(objects, w, h)
        if self.train and torch.rand(()) < self.flip_prob:
            pixels = pixels[:, ::-1]
            boxes = torch.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], dim=1)
        image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        target = {"boxes": boxes, "labels": labels, "image_id": image_id, "orig_size": torch.tensor([h, w])}
        return image, target


def _normalised_boxes(objects: list[tuple[int, list[float]]], w: int, h: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[x, y, w, h]`` pixel boxes as normalised xyxy clipped to the image, empty ones dropped."""
    if not objects:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    labels = torch.tensor([label for label, _ in objects], dtype=torch.long)
    xywh = torch.tensor([box for _, box in objects], dtype=torch.float32)
    boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1) / torch.tensor([w, h, w, h])
    boxes = boxes.clamp(0.0, 1.0)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], labels[keep]


def collate_detection(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """Stack a batch's images into ``(N, 3, S, S)`` and keep its targets as a list (their box counts differ)."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
