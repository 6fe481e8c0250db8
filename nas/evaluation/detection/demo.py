"""A small reference detector and a command that trains it on the built-in dataset.

``python -m nas.evaluation.detection.demo --epochs 16`` generates (or reuses) the default synthetic dataset, trains
`TinySSD` on CPU and prints the dataset time, the training time and the mAP before and after training. It is the
baseline the measurements in the README were taken with, and a template for a detector to search over.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn as nn

from search_spaces.heads.anchors import ASPECT_RATIOS, make_anchors


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinySSD(nn.Module):
    """A plain-conv single-shot detector predicting on three levels at strides 8, 16 and 32.

    Args:
        num_classes: object classes C (the logits have C + 1 columns, column 0 background).
        width: channels of the first stage; later stages double it up to 4x.
        anchors_per_location: a key of `search_spaces.heads.anchors.ASPECT_RATIOS`.
    """

    STRIDES = (8, 16, 32)

    def __init__(self, num_classes: int, width: int = 32, anchors_per_location: int = 4) -> None:
        super().__init__()
        if anchors_per_location not in ASPECT_RATIOS:
            raise ValueError(f"anchors_per_location must be one of {sorted(ASPECT_RATIOS)}, got {anchors_per_location}")
        self.num_classes, self.k = num_classes, anchors_per_location
        w = width
        self.stem = nn.Sequential(_conv(3, w, 2), _conv(w, w, 1), _conv(w, 2 * w, 2), _conv(2 * w, 2 * w, 1),
                                  _conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w, 1))          # stride 8
        self.down = nn.ModuleList([nn.Sequential(_conv(4 * w, 4 * w, 2), _conv(4 * w, 4 * w, 1)) for _ in range(2)])
        self.cls_heads = nn.ModuleList(nn.Conv2d(4 * w, self.k * (num_classes + 1), 3, 1, 1) for _ in self.STRIDES)
        self.box_heads = nn.ModuleList(nn.Conv2d(4 * w, self.k * 4, 3, 1, 1) for _ in self.STRIDES)

    def anchors(self, image_size: int) -> torch.Tensor:
        """Anchors matching this detector's outputs for ``image_size`` squares (sizes 0.1 to 0.5 of the side)."""
        sizes = [(-(-image_size // s), -(-image_size // s)) for s in self.STRIDES]
        return make_anchors(sizes, self.k, min_scale=0.1, max_scale=0.5)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(images)
        features = [x]
        for block in self.down:
            x = block(x)
            features.append(x)
        n = images.shape[0]
        # (N, k*c, H, W) -> (N, H, W, k*c) -> (N, H*W*k, c): the anchor order of make_anchors.
        cls = [h(f).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes + 1) for h, f in zip(self.cls_heads, features)]
        box = [h(f).permute(0, 2, 3, 1).reshape(n, -1, 4) for h, f in zip(self.box_heads, features)]
        return torch.cat(cls, dim=1), torch.cat(box, dim=1)


def main(argv: list[str] | None = None) -> dict:
    """Train `TinySSD` on the default synthetic dataset and print the timings and mAP as JSON."""
    from nas.evaluation.detection.synthetic import DEFAULT_IMAGE_SIZE, default_dataset
    from nas.evaluation.detection.train import evaluate_detector, train_detector

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=16.0)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--loss", choices=("ssd", "focal"), default="ssd")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache-dir", default=None, help="default: $HWNAS_DATA or ~/.cache/hwnas")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    data = default_dataset(args.cache_dir)
    dataset_s = time.perf_counter() - start
    train, val = data.datasets(DEFAULT_IMAGE_SIZE)
    torch.manual_seed(args.seed)
    model = TinySSD(len(data.class_names), width=args.width)
    anchors = model.anchors(DEFAULT_IMAGE_SIZE)
    before = evaluate_detector(model, anchors, val)
    start = time.perf_counter()
    fit = train_detector(model, anchors, train, epochs=args.epochs, lr=args.lr, loss=args.loss, seed=args.seed,
                         threads=args.threads)
    train_s = time.perf_counter() - start
    after = evaluate_detector(model, anchors, val)
    report = {"dataset": str(data.root), "dataset_seconds": round(dataset_s, 2), "train_seconds": round(train_s, 1),
              "steps": fit["steps"], "threads": torch.get_num_threads() if args.threads is None else args.threads,
              "untrained": before, "trained": after}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
