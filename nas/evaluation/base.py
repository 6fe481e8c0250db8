"""The evaluator interface and its registry (``evaluator.name`` in a recipe).

An evaluator turns a built network into an accuracy estimate: ``proxy`` (`nas.evaluation.evaluators`) trains it
briefly; ``tabular`` and ``surrogate`` (`nas.evaluation.tabular`) read it from a metric table, and evaluators whose
`trains` is False answer `estimate(arch_string)` without building a model; ``detection``
(`nas.evaluation.detection`) trains and scores a detector. Each registers itself here; importing
`nas.evaluation` registers them all.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from core.registry import PluginOptions, Registry

EVALUATORS: Registry[type[Evaluator]] = Registry("evaluator")
register_evaluator = EVALUATORS.register


class EvaluatorOptions(PluginOptions):
    """Base for an evaluator's recipe options."""


class Evaluator:
    """Base: `num_classes()` before any data is loaded, `evaluate(model, resolution)` -> metrics dict, or, for
    evaluators that need no model (`trains` False), `estimate(arch_string)` -> metrics dict."""

    Options: ClassVar[type[EvaluatorOptions]] = EvaluatorOptions
    trains: ClassVar[bool] = True
    quantizes: ClassVar[bool] = False   # can score its networks int8 (`quantization_data`; ``compression: int8``)
    prunes: ClassVar[bool] = False      # can prune and fine-tune (`evaluate_pruned`; keep ratios in a policy)
    metrics: ClassVar[tuple[str, ...]] = ()   # figures reported beside accuracy, each a results column

    def __init__(self, options: EvaluatorOptions, seed: int = 0):
        self.options, self.seed = options, seed

    def num_classes(self) -> int:
        raise NotImplementedError

    def evaluate(self, model: Any, resolution: int) -> dict[str, Any]:
        """Train and score `model` at `resolution`: ``accuracy``, the `metrics` figures and optionally ``losses``,
        the training loss of every step (the curve `nas.train` records)."""
        raise NotImplementedError

    def evaluate_pruned(self, model: Any, resolution: int, prune: Callable[[Any], Any]) -> dict[str, Any]:
        """Train `model` (a dense network), `prune(model)` in place, fine-tune and score it, within the training
        budget `evaluate` spends on one network (so a pruned candidate is not trained longer than the others):
        `evaluate`'s metrics of the pruned network, with ``accuracy_unpruned``, the dense network's before
        pruning. Only evaluators whose `prunes` is True can (`nas.trial.train_candidate`), by `train_dense` then
        `fine_tune_pruned`: two steps, so the dense phase of one network can be trained once for every pruning of
        it."""
        return self.fine_tune_pruned(model, resolution, prune, self.train_dense(model, resolution))

    def train_dense(self, model: Any, resolution: int) -> dict[str, Any]:
        """The first part of `evaluate_pruned`: `model` (dense) trained in place for its share of the budget;
        `evaluate`'s metrics of it."""
        raise NotImplementedError(f"{type(self).__name__} cannot fine-tune pruned networks")

    def fine_tune_pruned(self, model: Any, resolution: int, prune: Callable[[Any], Any],
                         dense: dict[str, Any]) -> dict[str, Any]:
        """The rest of `evaluate_pruned`: `model`, trained by `train_dense` (whose metrics are `dense`), pruned by
        `prune` in place and fine-tuned for the rest of the budget; the pruned network's metrics with
        ``accuracy_unpruned``."""
        raise NotImplementedError(f"{type(self).__name__} cannot fine-tune pruned networks")

    def qat_epochs(self) -> float | None:
        """The budget of quantization-aware fine-tuning after training (`fine_tune_quantized`), or None: the
        network is quantized after training only (the default)."""
        return None

    def fine_tune_quantized(self, model: Any, resolution: int) -> dict[str, Any]:
        """Train `model` in place for the `qat_epochs` budget and score it: `evaluate`'s metrics. `model` is the
        trained network with fake-quantize nodes (`core.quantize.prepare_qat`; `nas.compression` converts it to
        int8 afterwards), or, to tell what the fake quantization adds, the fp32 network itself."""
        raise NotImplementedError(f"{type(self).__name__} cannot fine-tune quantized networks")

    def estimate(self, arch: str) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} needs a built model (trains is True)")

    def quantization_data(self, resolution: int) -> tuple[Any, Any]:
        """(calibration, validation) datasets of ``(image, label)`` items at `resolution`, for scoring a trained
        network after int8 quantization (`nas.compression`): calibration from the training data, validation the
        data `evaluate` scores on. Only evaluators whose `quantizes` is True have them."""
        raise NotImplementedError(f"{type(self).__name__} cannot score quantized networks")

    def held_out(self, resolution: int) -> Any:
        """Labelled images at `resolution` that no trial trains or validates on, or None where there are none (the
        default). A search picks its winner by validation accuracy, which flatters the winner; the export scores it
        on these as well (`nas.compression.held_out_scores`). The proxy's: MNIST-5k's images its ``limit`` leaves
        out, or an image folder's ``test/`` (`nas.evaluation.data.load_held_out`)."""
        return None

    def held_out_record(self) -> str:
        """One line for the model card: which images `held_out` returns."""
        return "none"

    def bind(self, space: Any) -> Evaluator:
        """Attach the search space (evaluators that read arch strings need it); returns self."""
        return self

    def device(self) -> str:
        """The torch device this evaluator trains on: its ``device`` option (``cpu``, ``cuda``, or ``auto``: CUDA
        when this process sees a GPU); the CPU for evaluators without one.

        Raises:
            RuntimeError: ``cuda`` asked for and no GPU seen (a trial records it as failed).
        """
        wanted = getattr(self.options, "device", "cpu")
        if wanted == "cpu":
            return "cpu"
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if wanted == "cuda":
            raise RuntimeError("evaluator.options.device is 'cuda' but this trial sees no GPU (set "
                               "cluster.gpus_per_trial, or device: auto)")
        return "cpu"

    def dataset_record(self) -> dict[str, Any]:
        """What a model card says of the data behind the accuracy: ``name``, ``sha256`` (a hash of its content,
        None where there is no data of its own) and ``split`` (where the accuracy was measured)."""
        return {"name": type(self).__name__, "sha256": None, "split": "not recorded"}

    def export_extras(self, model: Any) -> tuple[dict[str, str], dict[str, Any]]:
        """(notes for the model card, JSON files by file name) that an exported network of this evaluator needs
        beside its weights and ONNX graph, e.g. a detector's anchors; none by default."""
        return {}, {}


def make_evaluator(name: str, options: dict[str, Any] | EvaluatorOptions | None, seed: int = 0) -> Evaluator:
    """Instantiate a registered evaluator (`Registry.create`)."""
    return EVALUATORS.create(name, options, seed=seed)
