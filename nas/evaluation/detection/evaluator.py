"""The ``detection`` evaluator: a short, seeded detector training run scored by COCO mAP.

It trains the built detector (`search_spaces.heads.detector.Detector`; any module with the
`nas.evaluation.detection` contract and its SSD anchors in ``model.anchors``) on a COCO-format dataset and reports
mAP@0.5 and COCO mAP@[.5:.95] on the validation split; ``accuracy``, the figure the controllers maximise, is the one
`metric` names. By default the data is the embedded synthetic dataset (`nas.evaluation.detection.synthetic`,
generated once on disk, offline); ``dataset: coco`` reads real data: an image folder and an ``instances_*.json`` file
per split, given one by one or as a `path` holding ``train/``, ``val/`` and ``annotations/instances_{train,val}.json``.

The training (`nas.evaluation.detection.train`) and everything it uses (box coding, losses, NMS, mAP, the COCO
loader, the synthetic generator) live beside this evaluator, in this package.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from nas.evaluation.base import Evaluator, EvaluatorOptions, register_evaluator

CACHE_AUTO_BYTES = 2 << 30   # cache_images: auto keeps images in memory when both splits take at most this
SPLITS = ("train_images", "train_annotations", "val_images", "val_annotations")
LAYOUT = {"train_images": "train", "val_images": "val", "train_annotations": "annotations/instances_train.json",
          "val_annotations": "annotations/instances_val.json"}


class DetectionOptions(EvaluatorOptions):
    """Detector training and evaluation."""

    dataset: Literal["synthetic", "coco"] = "synthetic"
    path: str | None = Field(None, description="coco: root with train/, val/ and annotations/instances_*.json")
    train_images: str | None = None
    train_annotations: str | None = None
    val_images: str | None = None
    val_annotations: str | None = None
    synthetic_train: PositiveInt = Field(600, description="synthetic: training images")
    synthetic_val: PositiveInt = Field(150, description="synthetic: validation images")
    synthetic_size: PositiveInt = Field(128, description="synthetic: image side in pixels")
    synthetic_seed: int = Field(0, ge=0, description="synthetic: generation seed (the data stays the same whatever "
                                "the search's seed)")
    data_dir: str | None = Field(None, description="synthetic: cache folder (default $HWNAS_DATA or ~/.cache/hwnas)")
    epochs: PositiveFloat = 10.0
    batch_size: PositiveInt = 32
    lr: PositiveFloat = Field(0.02, description="peak learning rate (AdamW, warm-up then cosine); the default is the "
                              "one that trained a ShuffleNet detector on the synthetic set (README, Detection)")
    weight_decay: float = Field(1e-4, ge=0)
    loss: Literal["ssd", "focal"] = "ssd"
    metric: Literal["map50", "map"] = Field("map50", description="the figure reported as accuracy")
    limit: PositiveInt | None = Field(None, description="train on at most this many images (quick runs)")
    threads: PositiveInt = Field(1, description="torch intra-op threads per trial")
    cache_images: Literal["auto", "on", "off"] = Field("auto", description="keep the images decoded and resized "
                                                       "in memory across epochs and trials; auto: when both splits "
                                                       f"fit in {CACHE_AUTO_BYTES >> 30} GiB")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where each trial trains: auto takes the GPU "
                                                  "when the trial has one (cluster.gpus_per_trial), else the CPU")

    @field_validator("path", "data_dir", *SPLITS)
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        # trials may run in another working directory (Ray Tune's trial folders, other cluster nodes)
        return None if v is None else str(Path(v).expanduser().resolve())

    @model_validator(mode="after")
    def _coco_files(self) -> DetectionOptions:
        if self.dataset != "coco":
            return self
        for split in SPLITS:
            if getattr(self, split) is None:
                if self.path is None:
                    raise ValueError(f"dataset 'coco' needs evaluator.options.path or evaluator.options.{split}")
                object.__setattr__(self, split, str(Path(self.path) / LAYOUT[split]))
            must = Path(getattr(self, split))
            if not (must.is_dir() if split.endswith("images") else must.is_file()):
                raise ValueError(f"{split} {str(must)!r} does not exist")
        return self


@register_evaluator("detection")
class DetectionEvaluator(Evaluator):
    """mAP after a short, seeded detector training run (see the module)."""

    Options = DetectionOptions
    options: DetectionOptions
    metrics: ClassVar[tuple[str, ...]] = ("map50", "map")
    _cache: ClassVar[dict[tuple, Any]] = {}   # datasets per (options, resolution), reused across trials

    def files(self) -> dict[str, Path]:
        """Image folders and annotation files of both splits (the synthetic set is generated on first use)."""
        o = self.options
        if o.dataset == "coco":
            return {s: Path(getattr(o, s)) for s in SPLITS}
        from nas.evaluation.detection.synthetic import default_dataset

        data = default_dataset(o.data_dir, n_train=o.synthetic_train, n_val=o.synthetic_val,
                               image_size=o.synthetic_size, seed=o.synthetic_seed)
        return {s: getattr(data, s) for s in SPLITS}

    def dataset_record(self) -> dict[str, Any]:
        """The files of both splits hashed together (`core.errors.tree_sha256`); accuracy is the validation split's
        `metric`."""
        from core.errors import tree_sha256

        o, f = self.options, self.files()
        name = (f"synthetic shapes (nas.evaluation.detection.synthetic: {o.synthetic_train} train / "
                f"{o.synthetic_val} val images of {o.synthetic_size} px, seed {o.synthetic_seed})"
                if o.dataset == "synthetic" else f"COCO-format {Path(f['val_images']).name}")
        digest = hashlib.sha256("".join(f"{s}:{tree_sha256(f[s])}\n" for s in SPLITS).encode()).hexdigest()
        return {"name": name, "sha256": digest,
                "split": f"validation split ({Path(f['val_annotations']).name}), {o.metric} (COCO evaluation)"}

    def num_classes(self) -> int:
        from nas.evaluation.detection.data import read_annotations

        return len(read_annotations(self.files()["train_annotations"])["categories"])

    def _data(self, resolution: int):
        from torch.utils.data import Subset

        from nas.evaluation.detection.data import CocoDetection

        key = (self.options.model_dump_json(), resolution)
        if key not in self._cache:
            self._cache.clear()   # one dataset in memory per worker
            f = self.files()
            train = CocoDetection(f["train_images"], f["train_annotations"], resolution, train=True)
            val = CocoDetection(f["val_images"], f["val_annotations"], resolution)
            o = self.options
            n = min(len(train), o.limit or len(train)) + len(val)
            if o.cache_images == "on" or (o.cache_images == "auto" and n * 3 * resolution ** 2 <= CACHE_AUTO_BYTES):
                train.keep_in_memory()
                val.keep_in_memory()
            if o.limit is not None and o.limit < len(train):
                train = Subset(train, range(o.limit))
            self._cache[key] = (train, val)
        return self._cache[key]

    def evaluate(self, model: Any, resolution: int) -> dict[str, float]:
        import time

        from nas.evaluation.detection.train import evaluate_detector, train_detector

        o = self.options
        anchors = getattr(model, "anchors", None)
        if anchors is None:
            raise TypeError("the detection evaluator needs a detector with its SSD anchors in model.anchors "
                            "(search space lrssd)")
        device = self.device()
        train, val = self._data(resolution)
        start = time.perf_counter()
        try:
            trained = train_detector(model, anchors, train, epochs=o.epochs, batch_size=o.batch_size, lr=o.lr,
                                     weight_decay=o.weight_decay, loss=o.loss, seed=self.seed, threads=o.threads,
                                     device=device, progress=False)
            scores = evaluate_detector(model, anchors, val, batch_size=o.batch_size, device=device)
        finally:
            model.to("cpu")   # the trial saves and exports from the CPU
        return {"accuracy": scores[o.metric], "map50": scores["map50"], "map": scores["map"],
                "train_seconds": time.perf_counter() - start, "losses": trained["losses"]}

    def export_extras(self, model: Any) -> tuple[dict[str, str], dict[str, Any]]:
        """The graph ends at raw predictions for the detector's anchors: the card says so, and ``anchors.json``
        (the anchors and the box variances) is what decoding needs."""
        anchors = getattr(model, "anchors", None)
        if anchors is None:
            return {}, {}
        from nas.evaluation.detection.boxes import VARIANCES

        notes = {"outputs": "class logits (N, A, classes + 1; index 0 background) and SSD box deltas (N, A, 4) for "
                            "the A anchors in anchors.json; decoding and NMS are not in the graph: "
                            "nas.evaluation.detection.postprocess(logits, deltas, anchors) does them"}
        return notes, {"anchors.json": {
            "format": "cx, cy, w, h normalised to the image; box deltas scaled by the SSD variances",
            "variances": list(VARIANCES), "anchors": [[round(v, 6) for v in a] for a in anchors.tolist()]}}
