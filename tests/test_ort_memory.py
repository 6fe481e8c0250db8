"""The walk of onnxruntime's graph and allocation planner (`predictors.ort_memory`, ``engine="onnxruntime"`` of
`predictors.memory.inference_memory`): the planner's rules on graphs small enough to count by hand, and the
walk against onnxruntime's own allocator on networks of every space."""
from __future__ import annotations

import numpy as np
import pytest

from predictors.memory import inference_memory, main
from predictors.ort_memory import OrtGraph, fuse_sums, ort_graph, plan_peak
from search_spaces import get_space

CLASSES = {"mobilenet": 1000, "macro": 10, "fbnet": 100, "muffnet": 10, "nb201": 10}


def test_a_freed_buffer_handed_to_a_later_tensor_stays_held_in_between():
    """x (4 ch) -> conv a (8 ch) -> conv b (16 ch) -> shuffle of b (reshape, transpose, reshape) -> conv c (8 ch),
    8x8, no blocked layout: 2,048 bytes per 8-channel map. a dies at conv b, but the plan gives its buffer to c,
    whose shape it has (b's, freed later, has not), so it is held from conv a to conv c: beside b and the
    transpose's copy that is 10,240 bytes, where a walk of the live tensors counts 8,192. The reshapes alias
    their inputs."""
    g = OrtGraph(block=1)
    x = g.input(4, (8, 8))
    a = g.conv(x, 8, (8, 8))
    g.layer = 1
    b = g.conv(a, 16, (8, 8))
    g.layer = 2
    shuffled = g.shuffle(b, 2)
    g.layer = 3
    g.conv(shuffled, 8, (8, 8))
    assert [op.kind for op in g.ops] == ["FusedConv", "FusedConv", "Reshape", "Transpose", "Reshape", "FusedConv"]
    assert plan_peak(g) == (10240, 2)


def test_a_residual_becomes_the_convolutions_sum_written_in_place():
    """Blocked layout (16): stem 3 -> 16 channels, 1x1 to 32, 1x1 back to 16 without an activation, plus the stem's
    output. The addition becomes the last convolution's Sum, written over the stem's buffer: 4,096 + 8,192 bytes
    at most (a separate addition would hold a third map); the 3-channel input is read as it is (no reorder)."""
    g = OrtGraph(block=16)
    x = g.input(3, (8, 8))
    stem = g.conv(x, 16, (8, 8))
    g.add(g.conv(g.conv(stem, 32, (8, 8)), 16, (8, 8), act=False), stem)
    assert [op.kind for op in g.ops] == ["Conv", "Conv", "Conv", "Add"]
    assert plan_peak(g)[0] == 4 * 64 * (16 + 32 + 16)   # before the fusion: the addition's new tensor
    fuse_sums(g)
    assert [op.kind for op in g.ops] == ["Conv", "Conv", "Conv"] and g.ops[-1].inplace == stem.blocked
    assert plan_peak(g)[0] == 4 * 64 * (16 + 32)


def test_unaligned_channels_run_plain_and_are_reordered():
    """24 channels with blocks of 16: a convolution pads them to 32; a grouped 1x1 conv (12 channels a group)
    has no blocked kernel, so its input is reordered out of the layout and its output back in."""
    g = OrtGraph(block=16)
    x = g.input(16, (4, 4))
    y = g.conv(g.conv(x, 24, (4, 4)), 24, (4, 4), groups=2)
    g.conv(y, 24, (4, 4), groups=24)
    kinds = [(op.kind, g.shapes[op.outputs[0]][1]) for op in g.ops]
    assert kinds == [("ReorderInput", 16), ("Conv", 32), ("ReorderOutput", 24), ("FusedConv", 24),
                     ("ReorderInput", 32), ("Conv", 32)]


def _measured(space, arch, path) -> int:
    from core.timing import export_onnx
    from hardware_profiles.memory import onnx_activation_bytes

    shape = space.input_shape(arch)
    return onnx_activation_bytes(export_onnx(space.build(arch).eval(), shape, path), shape)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_the_walk_is_onnxruntimes_measured_peak(name, tmp_path):
    """Three seeded networks of each space, exported and run by onnxruntime's CPU provider: the walk, which never
    builds them, gives its allocator's peak (`hardware_profiles.memory.onnx_activation_bytes`) to the byte, as on
    499 of the 500 networks bench/memory_energy.py measured."""
    from hardware_profiles.memory import ort_channel_block

    block = ort_channel_block()
    space = get_space(name, {}, num_classes=CLASSES[name])
    rng = np.random.default_rng(5)
    for i in range(3):
        arch = space.sample(rng)
        walk = inference_memory(space, arch, channel_block=block, engine="onnxruntime")
        assert walk.engine == "onnxruntime"
        assert walk.activation_bytes == _measured(space, arch, tmp_path / f"{i}.onnx"), space.to_string(arch)


@pytest.mark.parametrize("name, options, arch", [
    # cells whose sums share operands, or add a node to itself: no convolution takes a Sum another node reads
    ("nb201", {}, "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|none~0|none~1|none~2|"),
    ("nb201", {}, "|nor_conv_1x1~0|+|nor_conv_1x1~0|skip_connect~1|+|avg_pool_3x3~0|skip_connect~1|none~2|"),
    ("nb201", {}, "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"),
    # squeeze-excite where the expansion keeps the width: after the depthwise conv, not the projection
    ("mobilenet", {"expansions": [1.0], "se": [True], "resolutions": [96]}, None),
    # 8-channel layers, fewer than a block: the convolution reads the plain tensor, reordered out if need be
    ("mobilenet", {"widths": [0.35], "resolutions": [96]}, None)])
def test_the_walk_follows_onnxruntime_where_its_rules_are_subtle(name, options, arch, tmp_path):
    from hardware_profiles.memory import ort_channel_block

    space = get_space(name, options, num_classes=CLASSES[name])
    archs = [space.decode(arch)] if arch else [space.sample(np.random.default_rng(k)) for k in range(2)]
    for i, a in enumerate(archs):
        walk = inference_memory(space, a, channel_block=ort_channel_block(), engine="onnxruntime")
        assert walk.engine == "onnxruntime"
        assert walk.activation_bytes == _measured(space, a, tmp_path / f"{i}.onnx"), space.to_string(a)


def test_every_nas_bench_201_cell_gets_a_graph():
    """All 15,625 cells (every 7th, one in each run of the edge choices), walked without error: a cell of skips
    adds a node to itself, sums share operands; each walk is onnxruntime's, none falls back."""
    from search_spaces.nb201 import NB201Arch, NUM_EDGES, NUM_OPS

    space = get_space("nb201", {"resolution": 8}, num_classes=10)
    for n in range(0, NUM_OPS ** NUM_EDGES, 7):
        ops = tuple(n // NUM_OPS ** e % NUM_OPS for e in range(NUM_EDGES))
        peak, layer = plan_peak(ort_graph(space, NB201Arch(ops), 16))
        assert peak > 0 and 0 <= layer < len(space.layer_costs(NB201Arch(ops)))


def test_networks_the_walk_does_not_build_get_the_fused_walk():
    """A quantized layer (a compression policy's int8 units), an activation onnxruntime runs as nodes of its own
    (swish), or a detector whose layers are no chain: the onnxruntime engine gives the fused walk's figure, and
    says so, rather than a wrong graph's."""
    from predictors.ort_memory import NotModelled

    from search_spaces.policy import PolicyArch

    macro = get_space("macro", {"compression": {"precisions": ["fp32", "int8"]}}, num_classes=10)
    arch = PolicyArch(macro.base.sample(np.random.default_rng(0)), ("int8",) * len(macro.units))
    assert any(lc.key.precision == "int8" for lc in macro.layer_costs(arch))
    detector = get_space("lrssd", {}, num_classes=21)
    swish = get_space("mobilenet", {"act": "swish"}, num_classes=10)
    cases = [(detector, detector.sample(np.random.default_rng(0))), (macro, arch),
             (swish, swish.sample(np.random.default_rng(0)))]
    for space, a in cases:
        with pytest.raises(NotModelled):
            ort_graph(space, a, 16)
        walk = inference_memory(space, a, channel_block=16, engine="onnxruntime")
        assert walk.engine == "fused" and walk == inference_memory(space, a, channel_block=16, engine="fused")


def test_cli_engine_onnxruntime(capsys):
    assert main(["--space", "macro", "--num-classes", "10", "--arch", "12120201", "--engine", "onnxruntime",
                 "--channel-block", "8"]) == 0
    assert "activation peak (onnxruntime, block 8)" in capsys.readouterr().out
    assert main(["--space", "macro", "--num-classes", "10", "--arch", "12120201", "--channel-block", "0"]) == 2
    assert "--channel-block: 0: expected a positive channel count" in capsys.readouterr().err
