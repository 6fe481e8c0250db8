"""Short, deterministic proxy training used to score candidate networks.

A candidate is trained for a fraction of an epoch to a few epochs with SGD (Nesterov momentum) and a warmup +
cosine learning-rate schedule, then scored by top-1 accuracy on the validation set. Everything that could make two
runs differ on CPU (weight init aside, which the caller owns) is pinned: the global RNG is forked and seeded, the
data order comes from a seeded `torch.Generator`, deterministic algorithms are switched on and the thread count is
fixed. The settings in force before the call are restored afterwards.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

# Share of the steps spent warming the learning rate up linearly; keeps BN nets stable in their first batches.
WARMUP_FRACTION = 0.05
# train_loss in the result is the mean over this many final steps (or all steps when fewer).
TRAIN_LOSS_WINDOW = 50


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@contextlib.contextmanager
def deterministic_cpu(seed: int, threads: int, warn_only: bool = False) -> Iterator[None]:
    """Seed torch, force deterministic kernels and fix the thread count; restore all three on exit.

    Args:
        seed: seed of the (forked) global torch RNG, which drives dropout and similar layers.
        threads: intra-op thread count for the duration of the block.
        warn_only: only warn where a kernel has no deterministic version (CUDA has none for some ops that
            networks here use, e.g. adaptive average pooling's backward pass).
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
            torch.set_num_threads(prev_threads)


def iterate_batches(
    data: Dataset, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over `data` in batches.

    In-memory `TensorDataset`s are sliced directly, which is far faster than collating item by item; other
    datasets go through a single-process `DataLoader` so the order still comes from `generator` alone.

    When shuffling (training), a final batch smaller than `batch_size` is dropped if there is at least one full
    batch: a batch of one would break BatchNorm and a ragged tail adds noise for nothing.

    Args:
        data: dataset of ``(image, label)`` items.
        batch_size: images per batch.
        shuffle: random order (training) or dataset order (evaluation).
        generator: source of the random order; required when `shuffle` is true.

    Yields:
        ``(images, labels)`` batches.
    """
    n = len(data)
    drop_last = shuffle and n >= batch_size
    if isinstance(data, TensorDataset):
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield data.tensors[0][idx], data.tensors[1][idx]
        return
    loader = DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last)
    yield from loader


def lr_at(step: int, total: int, base_lr: float) -> float:
    """Learning rate for `step` (0-based) of `total`: linear warmup then cosine decay to zero."""
    warmup = max(1, int(total * WARMUP_FRACTION))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def _train_steps(
    model: nn.Module, train: Dataset, optimizer: torch.optim.Optimizer, *, total: int, batch_size: int,
    lr: float, generator: torch.Generator, label_smoothing: float, device: str = "cpu",
) -> list[float]:
    """Run `total` SGD steps, cycling through shuffled epochs; returns the per-step losses."""
    losses: list[float] = []
    model.train()
    while len(losses) < total:
        for images, labels in iterate_batches(train, batch_size, shuffle=True, generator=generator):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(len(losses), total, lr)
            images, labels = images.to(device), labels.to(device)
            loss = F.cross_entropy(model(images), labels, label_smoothing=label_smoothing)
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingDiverged(f"training loss became {value} at step {len(losses) + 1} of {total} (lr={lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(value)
            if len(losses) >= total:
                break
    return losses


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, *, batch_size: int = 256, device: str = "cpu") -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of `model` (in eval mode) on `data`.

    Args:
        model: classifier returning logits.
        data: dataset of ``(image, label)`` items.
        batch_size: images per forward pass.
        device: where `model` is.

    Returns:
        ``(accuracy, loss)``; accuracy in ``[0, 1]``.
    """
    model.eval()
    correct, loss_sum, seen = 0, 0.0, 0
    for images, labels in iterate_batches(data, batch_size, shuffle=False):
        images, labels = images.to(device), labels.to(device)
        logits = model(images)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == labels).sum())
        seen += len(labels)
    if seen == 0:
        raise ValueError("validation set is empty")
    return correct / seen, loss_sum / seen


def train_and_evaluate(
    model: nn.Module,
    train: Dataset,
    val: Dataset,
    *,
    epochs: float = 1.0,
    batch_size: int = 64,
    lr: float = 0.05,
    weight_decay: float = 4e-5,
    seed: int = 0,
    threads: int = 1,
    label_smoothing: float = 0.0,
    device: str = "cpu",
) -> dict:
    """Train `model` in place for a short budget and score it on `val`.

    SGD with Nesterov momentum 0.9, a 5 % linear warmup and cosine decay to zero, computed per step so that
    fractional budgets (``epochs=0.5`` is half an epoch's steps) get a complete schedule. The same model weights,
    data and arguments give bit-identical results on CPU.

    Args:
        model: network to train; its weights are updated in place and it is left in eval mode.
        train: training set of ``(image, label)`` items.
        val: validation set.
        epochs: training budget in epochs; may be fractional, at least one step is always taken.
        batch_size: images per step.
        lr: peak learning rate.
        weight_decay: L2 penalty passed to SGD.
        seed: seed of the data order and of any randomness inside the model (dropout).
        threads: torch intra-op threads used while training.
        label_smoothing: label smoothing of the training loss (validation loss never smooths).
        device: where to train; on ``cuda`` deterministic kernels are asked for where they exist (a GPU run is not
            bit-reproducible), and the model is moved back to the CPU at the end.

    Returns:
        ``{"accuracy", "val_loss", "train_loss", "steps", "train_seconds", "losses"}``; ``train_loss`` is the
        mean over the last ``TRAIN_LOSS_WINDOW`` steps, ``losses`` the loss of every step (the training curve) and
        ``train_seconds`` excludes validation.

    Raises:
        TrainingDiverged: the training loss became NaN or infinite.
    """
    if epochs <= 0 or len(train) == 0:
        raise ValueError(f"epochs must be positive, got {epochs}" if epochs <= 0 else "training set is empty")
    total = max(1, round(epochs * max(1, len(train) // batch_size)))
    with deterministic_cpu(seed, threads, warn_only=device != "cpu"):
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.SGD(model.to(device).parameters(), lr=lr, momentum=0.9, nesterov=True,
                                    weight_decay=weight_decay)
        start = time.perf_counter()
        try:
            losses = _train_steps(model, train, optimizer, total=total, batch_size=batch_size, lr=lr,
                                  generator=generator, label_smoothing=label_smoothing, device=device)
            train_seconds = time.perf_counter() - start
            accuracy, val_loss = evaluate(model, val, device=device)
        finally:
            model.to("cpu")   # the trial saves and exports from the CPU
    window = losses[-TRAIN_LOSS_WINDOW:]
    return {"accuracy": accuracy, "val_loss": val_loss, "train_loss": sum(window) / len(window), "steps": total,
            "train_seconds": train_seconds, "losses": losses}
