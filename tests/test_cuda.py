"""GPU timing backend (CUDA graphs); runs only where CUDA is available: `python -m pytest -m gpu`."""
from __future__ import annotations

import pandas as pd
import pytest
import yaml

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TINY_SPACE = {"resolutions": [32], "widths": [0.5], "kernels": [3, 5], "expansions": [3], "se": [False, True],
              "stages": [{"channels": 16, "stride": 2, "depths": [1, 2]}], "last_channels": 0, "num_features": 64}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("batch", [1, 32])
def test_cuda_graph_timing_is_ordered_and_positive(precision, batch):
    from hardware_profiles.cuda import TorchCudaBackend
    from search_spaces.blocks import build_network
    from search_spaces.timm_defs import REFERENCE_NETWORKS

    backend = TorchCudaBackend(precision=precision, batch=batch, channels_last=True, warmup=5, repeats=20)
    stats = backend.measure(build_network(REFERENCE_NETWORKS["mobilenetv3_small_100"]), (1, 3, 224, 224))
    assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms and stats.repeats == 20


def test_measure_builds_a_gpu_table(tmp_path):
    from hardware_profiles.measure import main

    (tmp_path / "space.yaml").write_text(yaml.safe_dump(TINY_SPACE))
    assert main(["--profile", "gpu-test", "--space", "mobilenet", "--space-options", str(tmp_path / "space.yaml"),
                 "--backend", "torch-cuda", "--precision", "fp16", "--batch", "8", "--channels-last",
                 "--networks", "3", "--repeats", "10", "--warmup", "3", "--root", str(tmp_path)]) == 0
    blocks = pd.read_csv(tmp_path / "gpu-test" / "1" / "blocks.csv")
    manifest = yaml.safe_load((tmp_path / "gpu-test" / "1" / "manifest.yaml").read_text())
    assert len(blocks) == 12 and (blocks.median_ms > 0).all()
    assert manifest["backend"] == "torch-cuda" and manifest["batch"] == 8 and "gpu" in manifest["machine"]
