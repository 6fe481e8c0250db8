"""Features for latency predictors, derived from the shared per-block cost keys.

Block features describe one layer from its cost key alone (so a table of key strings is enough to train on):
operation, family and activation as one-hots, kernel, stride, expansion, groups, SE width, residual flag, input
and output shapes, and analytic size terms (log elements in and out, an estimate of the layer's MACs). Network
features are the space's own `encode(arch)` plus a few totals; the feature schema (names, in order) is saved with
every model and checked when it is loaded.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from search_spaces.blocks import CostKey, parse_cost_key

OPS = ("stem", "ds", "ir", "cn", "head", "classifier", "fbnet", "skip", "reluconv", "avgpool", "zero", "resblock",
       "shuffle", "maxpool", "add", "lateral", "extra", "fuseadd", "fusecat", "predict", "dsa", "er")
FAMILIES = ("mobilenetv3", "efficientnet", "fbnet", "nb201", "muffnet", "lrssd")
ACTS = ("relu", "relu6", "hard_swish", "swish", "none")
NUMERIC = ("kernel", "stride", "expansion", "groups", "se", "skip", "cin", "hw_in", "cout", "hw_out",
           "log_in_elems", "log_out_elems", "log_mid_elems", "log_macs_est")
BLOCK_FEATURES = tuple(f"op_{o}" for o in OPS) + tuple(f"family_{f}" for f in FAMILIES) + \
    tuple(f"act_{a}" for a in ACTS) + NUMERIC


def _macs_estimate(k: CostKey) -> float:
    """Rough MACs from the key alone (exact cost needs the space; trees only need the scale)."""
    cin, hw_in = k.in_shape[0], k.in_shape[1]
    cout, hw_out = k.out_shape[0], k.out_shape[1]
    if k.op in ("ir", "fbnet"):
        mid = cin * k.expansion
        return (cin * mid / k.groups * hw_in ** 2 + mid * k.kernel ** 2 * hw_out ** 2
                + mid * cout / k.groups * hw_out ** 2)
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
                     math.log1p(_macs_estimate(k))]


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
