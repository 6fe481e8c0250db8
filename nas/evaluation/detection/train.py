"""Train and score single-shot detectors.

The model contract: ``model(images) -> (cls_logits (N, A, C + 1), box_deltas (N, A, 4))``, with column 0 of the
logits the background and the A predictions in the order of the `anchors` passed alongside (see
`search_spaces.heads.anchors.make_anchors`). Datasets yield ``(image, target)`` items as
`nas.evaluation.detection.data.CocoDetection` does.

Training uses AdamW or SGD (Nesterov momentum 0.9) with a linear warmup over the first 5 % of steps and cosine
decay to zero, computed per step. The data order and the global torch RNG (augmentation, dropout) come from
`seed`, and the RNG state in force before the call is restored afterwards. The thread count is left to torch
unless `threads` is given.
"""
from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from nas.evaluation.detection.data import collate_detection
from nas.evaluation.detection.loss import LOSSES, detection_loss
from nas.evaluation.detection.metrics import detection_map
from nas.evaluation.detection.postprocess import postprocess
from nas.evaluation.proxy import TrainingDiverged, lr_at

# Gradients are clipped to this global norm: the first steps of a fresh detector can be large.
MAX_GRAD_NORM = 10.0
OPTIMIZERS = ("adamw", "sgd")


@contextlib.contextmanager
def _seeded(seed: int, threads: int | None) -> Iterator[None]:
    """Seed a fork of the global torch RNG and optionally set the thread count; restore both on exit."""
    prev_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(prev_threads)


def _optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW or Nesterov SGD over the model's parameters; no weight decay on biases and norm weights."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}; expected one of: {', '.join(OPTIMIZERS)}")


def _total_steps(n: int, batch_size: int, epochs: float | None, steps: int | None) -> int:
    """The step budget from exactly one of `epochs` and `steps`."""
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs and steps")
    if n == 0:
        raise ValueError("training set is empty")
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        return steps
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs}")
    return max(1, round(epochs * max(1, n // batch_size)))


def train_detector(
    model: nn.Module,
    anchors: torch.Tensor,
    train_dataset: Dataset,
    *,
    epochs: float | None = None,
    steps: int | None = None,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    optimizer: str = "adamw",
    loss: str = "ssd",
    iou_threshold: float = 0.5,
    device: str | torch.device = "cpu",
    seed: int = 0,
    threads: int | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> dict:
    """Train `model` in place on `train_dataset`.

    Args:
        model: detector following the module's contract; moved to `device` and left in train mode.
        anchors: ``(A, 4)`` centre-size anchors matching the model's predictions.
        train_dataset: dataset of ``(image, target)`` items.
        epochs: budget in passes over the data (may be fractional); give this or `steps`.
        steps: budget in optimizer steps.
        batch_size: images per step; a last partial batch of an epoch is dropped.
        lr: peak learning rate.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay of weight matrices and kernels.
        optimizer: ``"adamw"`` or ``"sgd"``.
        loss: ``"ssd"`` (multibox with hard negative mining) or ``"focal"``.
        iou_threshold: IoU for an anchor to count as matched to an object.
        device: where to train.
        seed: seed of the data order and of the global torch RNG during training.
        threads: torch intra-op threads during training; None leaves torch's setting alone.
        num_workers: DataLoader worker processes.
        progress: show a tqdm progress bar on stderr.

    Returns:
        ``{"steps", "loss", "losses"}``: steps taken, mean loss over the last 10 % of steps, per-step losses.

    Raises:
        TrainingDiverged: the loss became NaN or infinite.
        ValueError: bad budget, optimizer or loss name.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown detection loss {loss!r}; expected one of: {', '.join(LOSSES)}")
    total = _total_steps(len(train_dataset), batch_size, epochs, steps)
    model.to(device).train()
    with _seeded(seed, threads):
        opt = _optimizer(model, optimizer, lr, weight_decay)
        loader = DataLoader(train_dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_detection,
                            drop_last=len(train_dataset) >= batch_size, num_workers=num_workers,
                            generator=torch.Generator().manual_seed(seed))
        losses = _run_steps(model, opt, loader, anchors.to(device), total, lr, loss, iou_threshold, device, progress)
    tail = losses[-max(1, total // 10):]
    return {"steps": total, "loss": sum(tail) / len(tail), "losses": losses}


def _run_steps(model: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader, anchors: torch.Tensor, total: int,
               lr: float, loss: str, iou_threshold: float, device: str | torch.device, progress: bool) -> list[float]:
    """`total` optimizer steps over `loader` (as many passes as that takes), with the warm-up + cosine schedule;
    returns the per-step losses (`TrainingDiverged` on a non-finite one)."""
    from tqdm import tqdm

    losses: list[float] = []
    with tqdm(total=total, desc="train detector", unit="step", file=sys.stderr, disable=not progress,
              mininterval=0.5) as bar:
        while len(losses) < total:
            for images, targets in loader:
                value = _step(model, opt, anchors, images.to(device), targets, lr_at(len(losses), total, lr), loss,
                              iou_threshold)
                if not math.isfinite(value):
                    raise TrainingDiverged(f"detection loss became {value} at step {len(losses) + 1} of {total} "
                                           f"(lr={lr})")
                losses.append(value)
                bar.update()
                bar.set_postfix(loss=f"{value:.3f}", refresh=False)
                if len(losses) >= total:
                    break
    return losses


def _step(
    model: nn.Module, opt: torch.optim.Optimizer, anchors: torch.Tensor, images: torch.Tensor, targets: list[dict],
    lr: float, loss: str, iou_threshold: float,
) -> float:
    """One optimizer step; returns the loss before the step."""
    for group in opt.param_groups:
        group["lr"] = lr
    cls_logits, box_deltas = model(images)
    value = detection_loss(cls_logits, box_deltas, anchors, targets, loss=loss, iou_threshold=iou_threshold)["loss"]
    result = value.item()
    if math.isfinite(result):
        opt.zero_grad(set_to_none=True)
        value.backward()
        nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        opt.step()
    return result


@torch.no_grad()
def predict(
    model: nn.Module,
    anchors: torch.Tensor,
    dataset: Dataset,
    *,
    batch_size: int = 32,
    score_threshold: float = 0.01,
    nms_iou: float = 0.5,
    max_detections: int = 100,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[list[dict], list[dict]]:
    """Run `model` (in eval mode) over `dataset`.

    Returns:
        ``(targets, detections)``: the dataset's targets and the post-processed detections, per image, in
        dataset order (see `nas.evaluation.detection.postprocess.postprocess`).
    """
    from tqdm import tqdm

    was_training = model.training
    model.to(device).eval()
    anchors = anchors.to(device)
    all_targets, all_detections = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_detection)
    try:
        for images, targets in tqdm(loader, desc="detect", unit="batch", file=sys.stderr, disable=not progress):
            cls_logits, box_deltas = model(images.to(device))
            detections = postprocess(cls_logits, box_deltas, anchors, score_threshold=score_threshold,
                                     nms_iou=nms_iou, max_detections=max_detections)
            all_targets += targets
            all_detections += [{k: v.cpu() for k, v in d.items()} for d in detections]
    finally:
        model.train(was_training)
    return all_targets, all_detections


def evaluate_detector(
    model: nn.Module,
    anchors: torch.Tensor,
    dataset: Dataset,
    *,
    batch_size: int = 32,
    score_threshold: float = 0.01,
    nms_iou: float = 0.5,
    max_detections: int = 100,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """COCO mAP of `model` on `dataset`.

    Args:
        model: detector following the module's contract; its train/eval mode is restored afterwards.
        anchors: ``(A, 4)`` centre-size anchors matching the model's predictions.
        dataset: dataset of ``(image, target)`` items (no augmentation).
        batch_size: images per forward pass.
        score_threshold: lowest class probability kept as a detection (low, as COCO evaluation expects).
        nms_iou: IoU of per-class non-maximum suppression.
        max_detections: detections kept per image (COCO counts at most 100).
        device: where to run the model.
        progress: show a tqdm progress bar on stderr.

    Returns:
        ``{"map50", "map", "map75"}``: AP at IoU 0.5, AP averaged over IoU 0.5:0.95, AP at IoU 0.75.
    """
    targets, detections = predict(model, anchors, dataset, batch_size=batch_size, score_threshold=score_threshold,
                                  nms_iou=nms_iou, max_detections=max_detections, device=device, progress=progress)
    return detection_map(targets, detections)
