"""The detection evaluator on a GPU; runs only where CUDA is available: `python -m pytest -m gpu`."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# the lrssd_detection recipe's training (600 images at 128 px, 10 epochs, lr 0.02): mAP@0.5 0.68 on the CPU
DATA = {"synthetic_train": 600, "synthetic_val": 150, "synthetic_size": 128, "epochs": 10, "batch_size": 32}


def test_detector_trains_on_the_gpu_and_comes_back_on_the_cpu(tmp_path):
    from nas.evaluation.detection.train import evaluate_detector
    from nas.evaluation import make_evaluator
    from search_spaces import get_space

    ev = make_evaluator("detection", {**DATA, "data_dir": str(tmp_path)}, seed=0)   # device: auto
    assert ev.device() == "cuda"
    sp = get_space("lrssd", {"resolution": 128, "backbone_options": {"preset": "40m"}, "anchor_min_scale": 0.15,
                             "anchor_max_scale": 0.6}, num_classes=4)
    torch.manual_seed(0)
    model = sp.build(sp.decode("d3_w0.45_k3_g4_f2|d8_w0.5_k5_g4_f2|d4_w0.6_k7_g4_f2::l5_concat_sep_k5_w128_a6"))
    untrained = evaluate_detector(model, model.anchors, ev._data(128)[1])
    torch.cuda.reset_peak_memory_stats()
    scores = ev.evaluate(model, 128)
    assert torch.cuda.max_memory_allocated() > 0                       # it trained on the GPU
    assert all(p.device.type == "cpu" for p in model.parameters())    # and handed the model back on the CPU
    print("untrained", untrained, "trained", scores)
    assert scores["map50"] > untrained["map50"] + 0.4
