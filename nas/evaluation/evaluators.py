"""The ``proxy`` evaluator: accuracy after a short, seeded training run.

It trains a built network briefly on a small dataset (the embedded MNIST-5k by default, or an ImageFolder tree)
with a fixed seed, so the same architecture always gets the same figure on the same machine.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from nas.evaluation.base import Evaluator, EvaluatorOptions, register_evaluator


class ProxyOptions(EvaluatorOptions):
    """Short proxy training."""

    dataset: Literal["mnist5k", "imagefolder"] = "mnist5k"
    path: str | None = Field(None, description="ImageFolder root (with train/ and val/, or one folder to split)")
    epochs: PositiveFloat = 1.0
    batch_size: PositiveInt = 64
    lr: PositiveFloat = 0.05
    weight_decay: float = Field(4e-5, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    limit: PositiveInt | None = Field(None, description="use at most this many images (quick runs)")
    threads: PositiveInt = Field(1, description="torch intra-op threads per trial")
    fine_tune_epochs: PositiveFloat | None = Field(None, description="of epochs, the part spent fine-tuning a "
                                                   "network after structured pruning (a policy's keep ratios), "
                                                   "the rest training it dense; default: a quarter")
    fine_tune_lr: PositiveFloat | None = Field(None, description="peak learning rate of that fine-tuning; "
                                               "default: half of lr")
    qat_epochs: PositiveFloat | None = Field(None, description="epochs of quantization-aware fine-tuning after "
                                             "training, before a candidate is made int8 (compression: int8 with "
                                             "quantizer: pt2e); default: none, post-training quantization")
    qat_lr: PositiveFloat | None = Field(None, description="peak learning rate of that fine-tuning; default: a "
                                         "tenth of lr")
    device: Literal["cpu", "auto", "cuda"] = Field("cpu", description="where training runs: cpu (bit-reproducible, "
                                                   "the search's default), auto (the GPU when the process sees one; "
                                                   "what final training uses) or cuda")

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        # trials may run in another working directory (Ray Tune's trial folders, other cluster nodes)
        return None if v is None else str(Path(v).expanduser().resolve())

    @model_validator(mode="after")
    def _path_matches_dataset(self) -> ProxyOptions:
        if self.fine_tune_epochs is not None and self.fine_tune_epochs >= self.epochs:
            raise ValueError(f"fine_tune_epochs {self.fine_tune_epochs:g} leaves no dense training within epochs "
                             f"{self.epochs:g} (it is the part of epochs spent after pruning)")
        if self.limit is not None and (self.limit * self.val_fraction < 1 or self.limit * (1 - self.val_fraction) < 2):
            raise ValueError(f"limit {self.limit} leaves no training or validation images at val_fraction "
                             f"{self.val_fraction:g}")
        if self.dataset == "imagefolder":
            if not self.path:
                raise ValueError("dataset 'imagefolder' needs evaluator.options.path")
            from nas.evaluation.data import check_image_folder

            check_image_folder(self.path)   # a layout no trial could load fails the recipe, not every trial
        return self


@register_evaluator("proxy")
class ProxyTrainingEvaluator(Evaluator):
    """Accuracy after a short, seeded, deterministic training run."""

    Options = ProxyOptions
    options: ProxyOptions
    quantizes = True
    prunes = True
    _cache: ClassVar[dict[tuple, Any]] = {}   # datasets per (options, resolution), reused across trials

    def num_classes(self) -> int:
        if self.options.dataset == "mnist5k":
            return 10
        from nas.evaluation.data import check_image_folder

        return check_image_folder(self.options.path)

    def _data(self, resolution: int):
        from nas.evaluation.data import load_dataset

        o = self.options
        key = (o.dataset, o.path, resolution, self.seed, o.val_fraction, o.limit)
        if key not in self._cache:
            self._cache.clear()   # one dataset in memory per worker
            self._cache[key] = load_dataset(o.dataset, resolution, path=o.path, seed=self.seed,
                                            val_fraction=o.val_fraction, limit=o.limit)
        return self._cache[key]

    def dataset_record(self) -> dict[str, Any]:
        from nas.evaluation.data import dataset_record

        o = self.options
        return dataset_record(o.dataset, path=o.path, seed=self.seed, val_fraction=o.val_fraction, limit=o.limit)

    def quantization_data(self, resolution: int) -> tuple[Any, Any]:
        train, val, _ = self._data(resolution)
        return train, val

    def held_out(self, resolution: int) -> Any:
        from nas.evaluation.data import load_held_out

        o = self.options
        return load_held_out(o.dataset, resolution, path=o.path, seed=self.seed, limit=o.limit)

    def held_out_record(self) -> str:
        from nas.evaluation.data import held_out_record

        o = self.options
        return held_out_record(o.dataset, path=o.path, seed=self.seed, limit=o.limit)

    def _train(self, model: Any, resolution: int, epochs: float, lr: float) -> dict[str, float]:
        from nas.evaluation.proxy import train_and_evaluate

        o = self.options
        train, val, _ = self._data(resolution)
        return train_and_evaluate(model, train, val, epochs=epochs, batch_size=o.batch_size, lr=lr,
                                  weight_decay=o.weight_decay, seed=self.seed, threads=o.threads,
                                  label_smoothing=o.label_smoothing, device=self.device())

    def evaluate(self, model: Any, resolution: int) -> dict[str, float]:
        return self._train(model, resolution, self.options.epochs, self.options.lr)

    def qat_epochs(self) -> float | None:
        return self.options.qat_epochs

    def fine_tune_quantized(self, model: Any, resolution: int) -> dict[str, float]:
        """`qat_epochs` of training from ``qat_lr`` (its own warmup and cosine), on top of ``epochs``."""
        o = self.options
        if o.qat_epochs is None:
            raise ValueError("evaluator.options.qat_epochs is not set")
        return self._train(model, resolution, o.qat_epochs, o.qat_lr if o.qat_lr is not None else o.lr / 10)

    def _fine_tune_epochs(self) -> float:
        o = self.options
        return o.fine_tune_epochs if o.fine_tune_epochs is not None else o.epochs / 4

    def train_dense(self, model: Any, resolution: int) -> dict[str, float]:
        """The dense network trained for ``epochs - fine_tune_epochs`` (a full warmup-and-cosine schedule)."""
        return self._train(model, resolution, self.options.epochs - self._fine_tune_epochs(), self.options.lr)

    def fine_tune_pruned(self, model: Any, resolution: int, prune, dense: dict[str, Any]) -> dict[str, float]:
        """Pruned, then fine-tuned for ``fine_tune_epochs`` from ``fine_tune_lr`` (its own warmup and cosine):
        with `train_dense`, ``epochs`` of training in all, as every other candidate gets."""
        o, first = self.options, dense
        prune(model)
        then = self._train(model, resolution, self._fine_tune_epochs(),
                           o.fine_tune_lr if o.fine_tune_lr is not None else o.lr / 2)
        return {**then, "accuracy_unpruned": first["accuracy"], "steps": first["steps"] + then["steps"],
                "train_seconds": first["train_seconds"] + then["train_seconds"],
                "losses": first["losses"] + then["losses"]}
