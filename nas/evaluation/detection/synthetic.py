"""The built-in detection dataset: coloured shapes on crops of scikit-image's sample photographs, in COCO format.

Nothing is downloaded: the backgrounds are the photographs that ship inside the scikit-image wheel (read straight
from its ``skimage/data`` folder, never through its fetcher, which could download), and the objects are drawn
here. Each image gets 1-5 objects of four classes (``circle``, ``square``, ``triangle``, ``ring``) in random
colours and sizes. Objects may overlap, but a new object covers at most `max_overlap` of the smaller of its box
and any earlier box, so none is hidden; later objects are drawn over earlier ones and annotations are listed in
drawing order. Boxes are the tight bounds of the drawn pixels.

`make_synthetic_coco` writes::

    root/train/000000.png ...        root/annotations/instances_train.json
    root/val/000000.png ...          root/annotations/instances_val.json
    root/hwnas_synthetic.json        (the finished marker: the generation parameters)

The folder is built under a temporary name and renamed into place, so it is either absent or complete; a folder
with the same parameters is reused, one with other parameters or without the marker is regenerated. The same
parameters give the same images and boxes (for a given Pillow version). Every image draws from its own seeded
generator, so the first images of a split do not depend on how many there are.

`default_dataset` keeps the default set in a cache folder: ``$HWNAS_DATA`` if set, else
``$XDG_CACHE_HOME/hwnas`` or ``~/.cache/hwnas``, under ``detection/``.
"""
from __future__ import annotations

import colorsys
import dataclasses
import functools
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.io import atomic_write_json
from nas.evaluation.data import DatasetError

if TYPE_CHECKING:
    from PIL import Image

CLASSES = ("circle", "square", "triangle", "ring")
# Photographs bundled in the scikit-image wheel (listed in its RECORD), chosen for varied colour and texture.
BACKGROUNDS = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
    "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "rocket.jpg",
)
MARKER = "hwnas_synthetic.json"
# Bump when the drawing changes, so cached folders made by an older generator are rebuilt.
GENERATOR_VERSION = 1
DEFAULT_N_TRAIN = 600
DEFAULT_N_VAL = 150
DEFAULT_IMAGE_SIZE = 128
_OWN_ENTRIES = {"train", "val", "annotations", MARKER}


@dataclasses.dataclass(frozen=True)
class SyntheticCoco:
    """Where a generated dataset lives.

    Attributes:
        root: the dataset folder.
        train_images / val_images: image folders.
        train_annotations / val_annotations: ``instances_*.json`` files.
        class_names: names of labels 1..C.
    """

    root: Path
    train_images: Path
    val_images: Path
    train_annotations: Path
    val_annotations: Path
    class_names: tuple[str, ...] = CLASSES

    @classmethod
    def at(cls, root: Path) -> SyntheticCoco:
        """The layout `make_synthetic_coco` writes under `root`."""
        return cls(root, root / "train", root / "val", root / "annotations" / "instances_train.json",
                   root / "annotations" / "instances_val.json")

    def datasets(self, image_size: int, *, train_augment: bool = True):
        """``(train, val)`` `nas.evaluation.detection.data.CocoDetection` datasets over this folder."""
        from nas.evaluation.detection.data import CocoDetection

        return (CocoDetection(self.train_images, self.train_annotations, image_size, train=train_augment),
                CocoDetection(self.val_images, self.val_annotations, image_size))


@functools.lru_cache(maxsize=1)
def load_backgrounds() -> tuple[np.ndarray, ...]:
    """The background photographs as read-only ``(H, W, 3)`` uint8 arrays, read from the installed scikit-image.

    Raises:
        ImportError: scikit-image is not installed (the message gives the install command).
        DatasetError: a photograph is missing from the installation.
    """
    from PIL import Image

    try:
        import skimage
    except ImportError:
        raise ImportError("the synthetic detection dataset needs scikit-image: pip install scikit-image") from None
    folder = Path(skimage.__file__).parent / "data"
    arrays = []
    for name in BACKGROUNDS:
        if not (folder / name).is_file():
            raise DatasetError(f"scikit-image sample photograph {folder / name} is missing; reinstall scikit-image")
        with Image.open(folder / name) as img:
            array = np.asarray(img.convert("RGB"))
        array.setflags(write=False)
        arrays.append(array)
    return tuple(arrays)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A random square crop of a random photograph, resized to `size` and randomly mirrored."""
    from PIL import Image

    photos = load_backgrounds()
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    side = int(rng.uniform(0.3, 1.0) * min(h, w))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    img = Image.fromarray(np.ascontiguousarray(photo[y : y + side, x : x + side])).resize((size, size), Image.BILINEAR)
    return img.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else img


def _shape_mask(shape: str, box: tuple[int, int, int, int], size: int, rng: np.random.Generator) -> Image.Image:
    """A binary (0/255) ``L`` mask of `shape` drawn inside the pixel `box`, without anti-aliasing."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "square":
        draw.rectangle(box, fill=255)
    elif shape == "triangle":
        points = [(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)] if rng.random() < 0.5 else \
                 [(x0, y0), (x1, y0), ((x0 + x1) / 2, y1)]
        draw.polygon(points, fill=255)
    elif shape == "ring":
        draw.ellipse(box, outline=255, width=max(2, round((x1 - x0) * rng.uniform(0.15, 0.25))))
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of: {', '.join(CLASSES)}")
    return mask


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A saturated, fairly bright random colour."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
    return round(r * 255), round(g * 255), round(b * 255)


def _overlap_ok(box: tuple[int, ...], placed: list[tuple[int, ...]], max_overlap: float) -> bool:
    """Whether `box` covers at most `max_overlap` of the smaller of itself and each placed box."""
    for other in placed:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw > 0 and ih > 0:
            smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
            if iw * ih > max_overlap * smaller:
                return False
    return True


def render_image(rng: np.random.Generator, params: dict) -> tuple[Image.Image, list[dict]]:
    """One synthetic image and its objects.

    Args:
        rng: the image's own generator.
        params: generation parameters (``image_size``, ``min_objects``, ``max_objects``, ``min_size``,
            ``max_size``, ``max_overlap``) as `make_synthetic_coco` records them.

    Returns:
        ``(image, objects)``: an RGB PIL image and, in drawing order, dicts with ``label`` (1..C), ``shape``,
        ``color`` (RGB) and ``bbox`` (``[x, y, w, h]``, tight around the drawn pixels).
    """
    size = params["image_size"]
    img = _background(rng, size)
    placed: list[tuple[int, ...]] = []
    objects = []
    for _ in range(rng.integers(params["min_objects"], params["max_objects"] + 1)):
        for _attempt in range(20):
            side = int(rng.uniform(params["min_size"], params["max_size"]) * size)
            x0, y0 = int(rng.integers(0, size - side)), int(rng.integers(0, size - side))
            box = (x0, y0, x0 + side, y0 + side)
            if _overlap_ok(box, placed, params["max_overlap"]):
                break
        else:
            continue                                     # no room left for this object
        label = int(rng.integers(len(CLASSES)))
        mask = _shape_mask(CLASSES[label], box, size, rng)
        colour = _colour(rng)
        img.paste(colour, (0, 0, size, size), mask)
        left, top, right, bottom = mask.getbbox()
        placed.append((left, top, right, bottom))
        objects.append({"label": label + 1, "shape": CLASSES[label], "color": list(colour),
                        "bbox": [left, top, right - left, bottom - top]})
    return img, objects


def _write_split(folder: Path, annotation_file: Path, n: int, split: int, params: dict) -> None:
    """Render `n` images into `folder` and their COCO annotations into `annotation_file`."""
    folder.mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        img, objects = render_image(np.random.default_rng([params["seed"], split, i]), params)
        name = f"{i:06d}.png"
        img.save(folder / name)
        images.append({"id": i + 1, "file_name": name, "height": img.height, "width": img.width})
        for obj in objects:
            w, h = obj["bbox"][2:]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": obj["label"],
                                "bbox": obj["bbox"], "area": w * h, "iscrowd": 0,
                                "attributes": {"shape": obj["shape"], "color": obj["color"]}})
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(CLASSES)]
    data = {"info": {"description": "hwnas synthetic shapes", "generator_version": GENERATOR_VERSION},
            "images": images, "annotations": annotations, "categories": categories}
    atomic_write_json(annotation_file, data)


def _params(n_train: int, n_val: int, image_size: int, seed: int, **drawing: float) -> dict:
    """The generation parameters as recorded in the marker, after checking them."""
    if n_train < 1 or n_val < 1:
        raise ValueError(f"n_train and n_val must be at least 1, got {n_train} and {n_val}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    lo, hi = drawing["min_objects"], drawing["max_objects"]
    if not 1 <= lo <= hi:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {lo} and {hi}")
    lo, hi = drawing["min_size"], drawing["max_size"]
    if not 0.05 <= lo <= hi <= 0.9:
        raise ValueError(f"need 0.05 <= min_size <= max_size <= 0.9, got {lo} and {hi}")
    if not 0.0 <= drawing["max_overlap"] <= 1.0:
        raise ValueError(f"max_overlap must be in [0, 1], got {drawing['max_overlap']}")
    return {"generator": "nas.evaluation.detection.synthetic", "version": GENERATOR_VERSION, "classes": list(CLASSES),
            "backgrounds": list(BACKGROUNDS), "n_train": n_train, "n_val": n_val, "image_size": image_size,
            "seed": seed, **drawing}


def is_complete(root: str | Path, params: dict) -> bool:
    """Whether `root` holds a finished dataset generated with exactly `params`."""
    root = Path(root)
    try:
        recorded = json.loads((root / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    paths = SyntheticCoco.at(root)
    return (
        recorded == params
        and paths.train_annotations.is_file() and paths.val_annotations.is_file()
        and sum(1 for _ in paths.train_images.glob("*.png")) == params["n_train"]
        and sum(1 for _ in paths.val_images.glob("*.png")) == params["n_val"]
    )


def make_synthetic_coco(
    root: str | Path,
    n_train: int = DEFAULT_N_TRAIN,
    n_val: int = DEFAULT_N_VAL,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
    *,
    min_objects: int = 1,
    max_objects: int = 5,
    min_size: float = 0.1,
    max_size: float = 0.45,
    max_overlap: float = 0.25,
) -> SyntheticCoco:
    """Generate the synthetic shapes dataset in COCO format under `root`, or reuse it if already there.

    Args:
        root: dataset folder; created, or replaced when it holds an unfinished or differently made dataset.
        n_train: training images.
        n_val: validation images.
        image_size: side of the square PNG images in pixels.
        seed: seed of everything random; the same arguments give the same dataset.
        min_objects: fewest objects per image.
        max_objects: most objects per image (fewer when they do not fit under `max_overlap`).
        min_size: smallest object side as a share of the image side.
        max_size: largest object side as a share of the image side.
        max_overlap: most of the smaller of two boxes that they may share.

    Returns:
        The dataset's paths.

    Raises:
        DatasetError: `root` exists and holds files this generator did not write (it is never deleted then).
    """
    root = Path(root).expanduser()
    params = _params(n_train, n_val, image_size, seed, min_objects=min_objects, max_objects=max_objects,
                     min_size=min_size, max_size=max_size, max_overlap=max_overlap)
    if is_complete(root, params):
        return SyntheticCoco.at(root)
    _check_replaceable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(root, "tmp")
    try:
        paths = SyntheticCoco.at(tmp)
        _write_split(paths.train_images, paths.train_annotations, n_train, 0, params)
        _write_split(paths.val_images, paths.val_annotations, n_val, 1, params)
        atomic_write_json(tmp / MARKER, params)          # written last: its presence means the rest is there
        _move_into_place(tmp, root, params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)            # gone already after a successful move
    return SyntheticCoco.at(root)


def _sibling(root: Path, kind: str) -> Path:
    """A new, empty, hidden folder beside `root`.

    Made with mkdir rather than `tempfile.mkdtemp`, whose 0700 mode would follow the folder into the shared cache.
    """
    path = root.parent / f".{root.name}.{uuid.uuid4().hex[:12]}.{kind}"
    path.mkdir()
    return path


def _check_replaceable(root: Path) -> None:
    """Refuse to replace a folder holding anything the generator does not write."""
    if root.exists() and not root.is_dir():
        raise DatasetError(f"synthetic dataset folder {root} exists and is not a directory")
    if root.is_dir():
        foreign = sorted(p.name for p in root.iterdir() if p.name not in _OWN_ENTRIES)
        if foreign:
            raise DatasetError(f"synthetic dataset folder {root} holds files it did not write (e.g. {foreign[0]}); "
                               "pick another folder or empty it")


def _move_into_place(tmp: Path, root: Path, params: dict) -> None:
    """Rename the finished `tmp` onto `root`, setting aside an unfinished `root` first.

    Another process may finish the same dataset first (parallel trials sharing a cache); its folder is kept, as
    that process may already be reading it.
    """
    if is_complete(root, params):
        return
    if root.is_dir() and any(root.iterdir()):
        old = _sibling(root, "old")
        try:
            os.replace(root, old)                         # onto the empty folder mkdtemp made
        except FileNotFoundError:
            pass                                          # someone else moved it meanwhile
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, root)
    except OSError:
        if not is_complete(root, params):
            raise


def data_cache_dir() -> Path:
    """The data cache folder: ``$HWNAS_DATA``, else ``$XDG_CACHE_HOME/hwnas``, else ``~/.cache/hwnas``."""
    if os.environ.get("HWNAS_DATA"):
        return Path(os.environ["HWNAS_DATA"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "hwnas"


def default_dataset(
    cache_dir: str | Path | None = None,
    *,
    n_train: int = DEFAULT_N_TRAIN,
    n_val: int = DEFAULT_N_VAL,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
) -> SyntheticCoco:
    """The default synthetic detection dataset, generated on first use and reused afterwards.

    Args:
        cache_dir: parent folder; default `data_cache_dir()` (``$HWNAS_DATA`` or
            ``~/.cache/hwnas``). The dataset goes in ``<cache_dir>/detection/<name from the parameters>``.
        n_train: training images.
        n_val: validation images.
        image_size: image side in pixels.
        seed: generation seed.

    Returns:
        The dataset's paths.
    """
    parent = Path(cache_dir).expanduser() if cache_dir is not None else data_cache_dir()
    name = f"shapes-v{GENERATOR_VERSION}-{image_size}px-{n_train}x{n_val}-seed{seed}"
    return make_synthetic_coco(parent / "detection" / name, n_train, n_val, image_size, seed)
