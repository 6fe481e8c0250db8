"""Features for latency predictors, derived from the shared per-block cost keys.

Block features describe one layer from its cost key alone (so a table of key strings is enough to train on):
operation, family and activation as one-hots, kernel, stride, expansion, groups, SE width, residual flag, input and
output shapes, and analytic size terms (log elements in and out, an estimate of the layer's MACs, which also carries
what the key's later fields say: MixNet's mixed kernels and split 1x1 convs, a `uir` block's start and end depthwise
convs), whether TensorFlow 'same' padding adds a pad operation, and whether the layer runs int8 (a compression
policy, `search_spaces.policy`). Network features are the space's own
`encode(arch)` plus a few totals; the feature schema (names, in order) is saved with every model and checked when it
is loaded. Generic network features (`generic_row`) exist for any network, a point of a space or not (a timm model):
totals over its layers that say how far the block sum will be off (layer count, activation traffic, depthwise and
squeeze-excite shares, resolution).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from search_spaces.costs import HALF_PRECISIONS, CostKey, parse_cost_key

OPS = ("stem", "ds", "ir", "cn", "head", "classifier", "fbnet", "skip", "reluconv", "avgpool", "zero", "resblock",
       "shuffle", "maxpool", "add", "lateral", "extra", "fuseadd", "fusecat", "predict", "dsa", "er", "uir")
FAMILIES = ("mobilenetv3", "efficientnet", "fbnet", "nb201", "muffnet", "lrssd")
ACTS = ("relu", "relu6", "hard_swish", "swish", "none")
NUMERIC = ("kernel", "stride", "expansion", "groups", "se", "skip", "cin", "hw_in", "cout", "hw_out",
           "log_in_elems", "log_out_elems", "log_mid_elems", "log_macs_est",
           "dw_splits", "exp_splits", "proj_splits", "start_kernel", "end_kernel", "layer_scale", "same_pad", "int8",
           "half")
BLOCK_FEATURES = tuple(f"op_{o}" for o in OPS) + tuple(f"family_{f}" for f in FAMILIES) + \
    tuple(f"act_{a}" for a in ACTS) + NUMERIC


def _macs_estimate(k: CostKey) -> float:
    """Rough MACs from the key alone (exact cost needs the space; trees only need the scale)."""
    cin, hw_in = k.in_shape[0], k.in_shape[1]
    cout, hw_out = k.out_shape[0], k.out_shape[1]
    if k.op in ("ir", "fbnet"):   # MixNet: depthwise kernels mixed over equal-ish splits, 1x1 convs split
        mid = cin * k.expansion
        k2 = sum(x * x for x in k.kernels) / len(k.kernels) if k.kernels else k.kernel ** 2
        return (cin * mid / (k.groups * k.exp_splits) * hw_in ** 2 + mid * k2 * hw_out ** 2
                + mid * cout / (k.groups * k.proj_splits) * hw_out ** 2)
    if k.op == "uir":   # [start dw] 1x1 [middle dw] 1x1 [end dw]; the middle dw strides, else the start, else the end
        mid = cin * k.expansion
        hw_start = hw_out if k.start and not k.kernel else hw_in   # resolution after the start dw
        hw_mid = hw_out if k.kernel or k.start else hw_in           # resolution of the projection
        return (cin * k.start ** 2 * hw_start ** 2 + cin * mid * hw_start ** 2 + mid * k.kernel ** 2 * hw_out ** 2
                + mid * cout * hw_mid ** 2 + cout * k.end ** 2 * hw_out ** 2)
    if k.op == "er":   # dense kxk expansion (strided), then pointwise
        mid = cin * k.expansion
        return cin * mid * k.kernel ** 2 * hw_out ** 2 + mid * cout * hw_out ** 2
    if k.op in ("ds", "dsa", "extra", "predict"):   # depthwise kxk, then pointwise (LRSSD's extra, predict too)
        return cin * k.kernel ** 2 * hw_out ** 2 + cin * cout * hw_out ** 2
    if k.op == "head" and k.family == "mobilenetv3":
        return cin * cout
    if k.op == "shuffle":   # ShuffleNetV2 unit: grouped 1x1 convs and depthwise convs on half the channels
        half = cout / 2
        if k.stride == 1:
            return 2 * half * half / k.groups * hw_in ** 2 + half * k.kernel ** 2 * hw_out ** 2
        g_in = math.gcd(k.groups, cin)   # down-sampling unit: two branches read all `cin` channels
        return (cin * k.kernel ** 2 * hw_out ** 2 + cin * half / g_in * (hw_in ** 2 + hw_out ** 2)
                + half * k.kernel ** 2 * hw_out ** 2 + half * half / k.groups * hw_out ** 2)
    if k.op in ("zero", "add", "fuseadd") or (k.op == "skip" and cin == cout and k.stride == 1):
        return 0.0
    if k.op in ("avgpool", "maxpool"):   # additions or comparisons over the window, no multiplies
        return cin * k.kernel ** 2 * hw_out ** 2
    if k.op == "head" and k.family == "nb201":   # BN, ReLU and global pool; no convolution
        return cin * hw_in ** 2
    if k.op == "resblock":   # kxk conv_a (strided), kxk conv_b, 1x1 shortcut conv
        return (cin + cout) * cout * k.kernel ** 2 * hw_out ** 2 + cin * cout * hw_out ** 2
    return cin * cout * k.kernel ** 2 * max(hw_out, 1) ** 2 if k.op != "head" else cin * cout * hw_in ** 2


def block_row(key: CostKey | str) -> list[float]:
    """Feature vector of one cost key (order: `BLOCK_FEATURES`)."""
    k = parse_cost_key(key) if isinstance(key, str) else key
    cin, hw_in = k.in_shape[0], k.in_shape[1]
    cout, hw_out = k.out_shape[0], k.out_shape[1]
    mid = cin * k.expansion
    onehot = [float(k.op == o) for o in OPS] + [float(k.family == f) for f in FAMILIES] + \
        [float(k.act == a) for a in ACTS]
    return onehot + [k.kernel, k.stride, k.expansion, k.groups, k.se, float(k.skip), cin, hw_in, cout, hw_out,
                     math.log1p(cin * hw_in ** 2), math.log1p(cout * hw_out ** 2), math.log1p(mid * hw_out ** 2),
                     math.log1p(_macs_estimate(k)),
                     # how many convolutions the block launches: MixNet's mixed kernels and split 1x1 convs are
                     # several small ones, MobileNetV4's extra depthwise convs more; without these a tree cannot
                     # tell them from one conv of the same MACs (MixNets were priced at 2/3 of their time)
                     float(len(k.kernels) or 1), k.exp_splits, k.proj_splits, k.start, k.end, float(k.layer_scale),
                     float(k.same_pad),   # TensorFlow 'same' padding: one more (pad) operation
                     float(k.precision == "int8"),   # run quantized (a compression policy's int8 layer)
                     float(k.precision in HALF_PRECISIONS)]   # run in 16-bit floats (a policy's fp16/bf16 layer)


def block_matrix(keys: Sequence[CostKey | str]) -> np.ndarray:
    """Feature matrix of many cost keys (one row each)."""
    return np.asarray([block_row(k) for k in keys], dtype=np.float64).reshape(len(keys), len(BLOCK_FEATURES))


def network_matrix(encoded: np.ndarray, sums_ms: np.ndarray, flops: np.ndarray) -> np.ndarray:
    """Network features: the space's encoding of the archs (`space.encode`), then log block-sum latency and
    log FLOPs."""
    out = np.empty((len(encoded), encoded.shape[1] + 2), dtype=np.float64)
    out[:, :-2] = encoded
    out[:, -2] = np.log(np.maximum(sums_ms, 1e-9))
    out[:, -1] = np.log1p(np.asarray(flops, float))
    return out


def network_feature_names(space) -> list[str]:
    """Names of `network_matrix`'s columns for `space`."""
    width = np.asarray(space.encode([space.smallest()])).shape[1]
    return [f"enc_{i}" for i in range(width)] + ["log_block_sum_ms", "log_flops"]


GENERIC_FEATURES = ("log_block_sum_ms", "log_macs", "log_params", "layers", "log_act_elems", "log_ms_per_layer",
                    "depthwise_share", "se_layers", "skips", "log_resolution")


def generic_row(layers: Sequence, sum_ms: float) -> list[float]:
    """Generic features of one network from its `LayerCost`s and its block sum (order: `GENERIC_FEATURES`)."""
    macs = sum(lc.macs for lc in layers)
    depthwise = sum(c.macs for lc in layers for c in lc.convs if c.groups == c.cin and c.groups > 1)
    act = sum(c.cout * c.hw_out ** 2 + c.cin * c.hw_in ** 2 for lc in layers for c in lc.convs)
    n = max(len(layers), 1)
    resolution = max((lc.key.in_shape[1] for lc in layers), default=1)
    return [math.log(max(sum_ms, 1e-9)), math.log1p(macs), math.log1p(sum(lc.params for lc in layers)),
            float(len(layers)), math.log1p(act), math.log(max(sum_ms, 1e-9) / n), depthwise / max(macs, 1),
            float(sum(lc.key.se > 0 for lc in layers)), float(sum(lc.key.skip for lc in layers)),
            math.log(resolution)]


def generic_matrix(layer_lists: Sequence[Sequence], sums_ms: Sequence[float]) -> np.ndarray:
    """Generic features of many networks (one row each)."""
    return np.asarray([generic_row(layers, s) for layers, s in zip(layer_lists, sums_ms)],
                      dtype=np.float64).reshape(len(layer_lists), len(GENERIC_FEATURES))


def prior_basis(key: CostKey | str) -> list[float]:
    """Analytic terms of one block from its key alone: estimated MACs, activation elements moved (input, output
    and, for expanding blocks, the expanded tensor twice) and a constant. A non-negative mix of them is the block
    model's prior (`LGBMLatencyPredictor.fit_block_model`): it scales with a block's size where trees cannot,
    so blocks larger or smaller than any measured one are not priced as the nearest measured one."""
    k = parse_cost_key(key) if isinstance(key, str) else key
    cin, hw_in = k.in_shape[0], k.in_shape[1]
    cout, hw_out = k.out_shape[0], k.out_shape[1]
    mid = cin * k.expansion if k.op in ("ir", "er", "fbnet", "uir") else cin
    return [_macs_estimate(k), cin * hw_in ** 2 + cout * hw_out ** 2 + 2 * mid * hw_out ** 2, 1.0]


def prior_matrix(keys: Sequence[CostKey | str]) -> np.ndarray:
    """`prior_basis` of many keys (one row each)."""
    return np.asarray([prior_basis(k) for k in keys], dtype=np.float64).reshape(len(keys), 3)
