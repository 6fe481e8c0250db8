"""The joint backbone + LRSSD head space: strings, search operators, exact cost, build, layers and ONNX."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from search_spaces import get_space
from search_spaces.heads.lrssd import HeadArch, head_layer_costs, level_sizes

RES = 64   # small inputs keep the builds fast; every level still exists (64 -> 8, 4, 2, 1, 1, 1)


def space(res: int = RES, num_classes: int = 3, **head):
    return get_space("lrssd", {"resolution": res, "backbone_options": {"preset": "40m"}, "head": head},
                     num_classes=num_classes)


def archs(sp, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [sp.sample(rng) for _ in range(n)]


def test_string_round_trip_and_errors():
    sp = space()
    for a in archs(sp, 20):
        s = sp.to_string(a)
        assert sp.decode(s) == a and s.endswith(str(a.head))
    backbone = sp.to_string(archs(sp, 1)[0]).split("::")[0]
    with pytest.raises(ValueError, match="<backbone>::<head>"):
        sp.decode(backbone)
    with pytest.raises(ValueError, match="is not of the form"):
        sp.decode(backbone + "::l4_add_shared_k3_w96")
    with pytest.raises(ValueError, match="kernel 7 is not among"):
        sp.decode(backbone + "::l4_add_shared_k7_w96_a6")
    with pytest.raises(ValueError, match="levels 6 is not among"):
        space(levels=[3, 4]).decode(backbone + "::l6_add_shared_k3_w96_a6")


def test_a_backbone_without_feature_maps_is_refused():
    with pytest.raises(ValueError, match="cannot be a detection backbone"):
        get_space("lrssd", {"backbone": "nb201"})


@pytest.mark.parametrize("seed", range(4))
def test_analytic_cost_equals_the_built_detector(seed):
    sp = space()
    for a in archs(sp, 3, seed):
        model = sp.build(a).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(sp.input_shape(a)))
        assert sp.flops(a) == counter.get_total_flops() // 2, sp.to_string(a)
        assert sp.params(a) == sum(p.numel() for p in model.parameters()), sp.to_string(a)


@pytest.mark.parametrize("head", [HeadArch(3, "none", False, 3, 64, 4), HeadArch(6, "add", True, 5, 96, 6),
                                  HeadArch(5, "concat", False, 3, 128, 4), HeadArch(4, "concat", True, 5, 64, 6)],
                         ids=str)
def test_outputs_follow_the_anchors(head):
    sp = space(num_classes=5)
    a = type(archs(sp, 1)[0])(archs(sp, 1)[0].backbone, head)
    model = sp.build(a).eval()
    with torch.no_grad():
        logits, deltas = model(torch.zeros(2, 3, RES, RES))
    n = head.anchors * sum(s * s for s in level_sizes(RES, head.levels))
    assert logits.shape == (2, n, 6) and deltas.shape == (2, n, 4) and model.anchors.shape == (n, 4)
    # the maps the head sees have the sizes the anchors assume
    maps = model.backbone(torch.zeros(1, 3, RES, RES))
    assert [m.shape[-1] for m in maps] == level_sizes(RES, head.levels)[:3]


def test_a_shared_prediction_layer_counts_its_weights_once():
    channels = [48, 96, 192]
    sep = head_layer_costs(HeadArch(5, "add", False, 3, 64, 6), channels, 128, 3)
    shared = head_layer_costs(HeadArch(5, "add", True, 3, 64, 6), channels, 128, 3)
    pred = [lc for lc in shared if lc.key.op == "predict"]
    assert len(pred) == 5 and pred[0].params > 0 and all(lc.params == 0 for lc in pred[1:])
    assert sum(lc.macs for lc in sep) == sum(lc.macs for lc in shared)   # same work, fewer weights
    assert sum(lc.params for lc in shared) < sum(lc.params for lc in sep)


def test_fusion_and_extra_levels_add_their_layers():
    channels = [48, 96, 192]
    ops = lambda head: [lc.key.op for lc in head_layer_costs(head, channels, 128, 3)]  # noqa: E731
    assert ops(HeadArch(3, "none", False, 3, 64, 4)) == ["predict"] * 3                 # SSDLite-style: no laterals
    assert ops(HeadArch(5, "add", False, 3, 64, 4)) == ["extra"] * 2 + ["lateral"] * 3 + ["fuseadd"] * 4 + \
        ["predict"] * 5
    assert ops(HeadArch(4, "concat", True, 3, 64, 4)).count("fusecat") == 3


def test_every_layer_builds_alone_with_its_key_shapes():
    sp = space()
    seen = {}
    for a in archs(sp, 10):
        for lc in sp.layer_costs(a):
            seen.setdefault(str(lc.key), lc.key)
    for key in seen.values():
        layer = sp.build_layer(key).eval()
        with torch.no_grad():
            out = layer(torch.zeros(1, *key.in_shape))
        assert tuple(out.shape[1:]) == key.out_shape, str(key)


def test_search_operators_and_decision_view():
    sp = space()
    rng = np.random.default_rng(1)
    for a in archs(sp, 20):
        child = sp.mutate(a, rng)
        changed = sum(x != y for x, y in zip(sp.to_decisions(a), sp.to_decisions(child)))
        assert child != a and changed >= 1
        assert sp.from_decisions(sp.to_decisions(a)) == a
    a, b = archs(sp, 2, seed=3)
    child = sp.crossover(a, b, rng)
    for x, y, z in zip(sp.to_decisions(a), sp.to_decisions(b), sp.to_decisions(child)):
        assert z in (x, y)
    assert len(sp.decision_sizes()) == len(sp.to_decisions(a))
    enc = sp.encode(archs(sp, 7))
    assert enc.shape[0] == 7 and np.isfinite(enc).all()


def test_smallest_is_no_larger_than_any_sample():
    sp = space()
    small = sp.smallest()
    assert all(sp.flops(small) <= sp.flops(a) for a in archs(sp, 50))


def test_onnx_export_matches_pytorch_on_both_outputs(tmp_path):
    from core.timing import export_onnx
    from nas.export import onnx_parity

    sp = space()
    a = type(archs(sp, 1)[0])(archs(sp, 1)[0].backbone, HeadArch(5, "concat", True, 5, 64, 6))
    model = sp.build(a).eval()
    path = export_onnx(model, sp.input_shape(a), tmp_path / "det.onnx")
    assert onnx_parity(model, path, sp.input_shape(a)) < 1e-4
