"""Few-shot transfer: a latency predictor for a new device from a handful of its measurements.

    python -m predictors.train --init-from DIR[,DIR...] --samples N --table FILE.csv --target COLUMN --out DIR

The target's per-block cost is modelled as a non-negative mix of a few basis costs every block has:

- analytic terms of the block itself: dense (1x1 and full) MACs, depthwise MACs, activation elements read and
  written, parameters, a per-convolution constant (a roofline-style device prior that needs no source), and the
  MACs of *ragged* depthwise convolutions, whose channel count is not a multiple of `SIMD_CHANNELS`. Vectorised
  kernels take channels in blocks; onnxruntime's CPU depthwise convolution is 7-16x slower per MAC when the
  channels do not fill them (measured: 5x5 on 8x8 maps, 2.2 us at 56, 60 or 64 channels, 36-39 us at 57-59 or
  61-63). Searched widths make such counts common (a ShuffleNetV2 1.0x branch has 58 channels), and without
  the term the calibrated lrssd predictor put a third of the networks on the wrong side of a 1 ms limit;
  where channels do not matter, the fit gives both depthwise terms alike. The convolution terms of a layer that
  runs int8, int4 or in 16-bit floats (a compression policy's, `CostKey.precision`) are terms of their own:
  int8 kernels are other kernels, faster or slower per MAC than fp32 depending on the shape
  (`bench/compression.py`), and 16-bit ones use a GPU's tensor cores. Layers
  without a convolution that still run (pooling, zeroing, normalisation; not an identity) count as one
  `other_ops` each, a per-kernel cost that dominates small networks on GPUs at batch 1, and pooling adds its
  window reads (`pool_macs`): on
  NAS-Bench-201 cells, half of whose ops have no convolution, the convolution terms alone could not tell a
  pooling edge from a free skip;
- the block costs of the source predictors (`--init-from`), i.e. what each source device charges for the block.

A network's latency is a constant plus the sum of its blocks, so every basis term sums to a network-level
feature. Which terms to trust cannot be read off N = 5-20 target networks with any confidence, so the fit
averages over candidate models instead of picking one: the analytic terms alone, every source alone, every source
with the analytic terms, and (up to `max_sources`) the same for pairs of sources. Each candidate is a
non-negative least-squares fit of relative error (latency is timed with relative noise), and is weighted by
its leave-one-out error of log latency on the target networks, E^(-N/2) (a Gaussian likelihood in log space with
the variance profiled out), so a candidate that predicts held-out target networks clearly worse gets almost no
weight and a source that does not resemble the target is left out rather than trusted. Every candidate is
additive over blocks, so the weighted mix is one per-block cost table.

The result is an ordinary `LGBMLatencyPredictor` without the network correction (N networks are too few to learn
one): per-block costs for every block the space can produce plus a LightGBM block model, fitted to those costs,
for blocks outside that list. It saves, loads, predicts and evaluates like any other model.

Source block costs are the sources' block tables (measured or fitted), not their network-corrected predictions:
the mix must stay additive over blocks to become a table. On NAS-Bench-201 (19 devices, `bench/predictors.py
--study nb201`) latency is additive over the cell's edge ops to within timing noise on every device (a linear fit
on op counts ranks as well as a LightGBM model of the whole cell), so the corrections add nothing there.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import nnls

from core.errors import InputError
from predictors.models import LGBMLatencyPredictor

ANALYTIC = ("dense_macs", "depthwise_macs", "act_elems", "params", "convs", "ragged_depthwise_macs", "other_ops",
            "pool_macs", "int8_dense_macs", "int8_depthwise_macs", "int8_act_elems", "int8_convs",
            "int4_dense_macs", "int4_depthwise_macs", "int4_act_elems", "int4_convs",
            "half_dense_macs", "half_depthwise_macs", "half_act_elems", "half_convs")
# where a quantized layer's convolution terms go, by its key's precision (its kernels are other kernels; fp16 and
# bf16 run at one speed on the GPUs that have both, so they share theirs)
_HALF = {0: 16, 1: 17, 5: 17, 2: 18, 4: 19}
QUANTIZED = {"int8": {0: 8, 1: 9, 5: 9, 2: 10, 4: 11}, "int4": {0: 12, 1: 13, 5: 13, 2: 14, 4: 15},
             "fp16": _HALF, "bf16": _HALF}
POOLS = ("avgpool", "maxpool")
SIMD_CHANNELS = 4   # depthwise channel counts that are not a multiple of this are "ragged" (see the module)
LOO_FLOOR = 0.005   # LOO RMSE of log latency below which fits count as equal (0.5 %, below timing noise)
MIN_SHARE = 0.01    # candidates weighted less (relative to the best) are dropped; a source counts as used from
                    # this share of the predicted latency


def analytic_terms(layer) -> np.ndarray:
    """The analytic basis of one `LayerCost` (order: `ANALYTIC`)."""
    out = np.zeros(len(ANALYTIC))
    key = layer.key
    at = QUANTIZED[key.precision].get if key.precision in QUANTIZED else lambda i: i
    for c in layer.convs:
        depthwise = c.groups == c.cin and c.groups > 1
        out[at((5 if c.cin % SIMD_CHANNELS else 1) if depthwise else 0)] += c.macs
        out[at(2)] += c.cout * c.hw_out ** 2 + c.cin * c.hw_in ** 2
        out[3] += c.params
        out[at(4)] += 1
    if not layer.convs and not (key.op == "skip" and key.in_shape == key.out_shape):   # runs, but not a conv
        out[6] += 1
        if key.op in POOLS:
            out[7] += key.kernel ** 2 * float(np.prod(key.out_shape))
    return out


@dataclass
class TransferFit:
    """What the few-shot fit chose: basis names, their weights (in ms per basis unit), the constant and the
    leave-one-out RMSE of log latency on the target samples (of the candidates' weighted mix), the sources that
    carry at least `MIN_SHARE` of the predicted latency and the candidate models with their weights."""

    basis: list[str]
    weights: list[float]
    constant_ms: float
    loo_log_rmse: float
    sources: list[str] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"basis": self.basis, "weights": self.weights, "constant_ms": self.constant_ms,
                "loo_log_rmse": self.loo_log_rmse, "sources": self.sources, "candidates": self.candidates}


def _fit(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative weights (the constant last) minimising the relative error of `X @ w + c` against `y`."""
    return nnls(np.column_stack([X, np.ones(len(X))]) / y[:, None], np.ones(len(y)))[0]


def _loo_predictions(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each target network's prediction by the fit on the others."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        w = _fit(X[keep], y[keep])
        out[i] = X[i] @ w[:-1] + w[-1]
    return out


def candidates(analytic: Sequence[int], sources: Sequence[int], max_sources: int) -> list[list[int]]:
    """Column sets of the candidate models: the analytic terms alone, then every set of 1..`max_sources`
    sources, alone and with the analytic terms."""
    out = [list(analytic)]
    for k in range(1, max_sources + 1):
        for combo in itertools.combinations(sources, k):
            out += [list(combo), list(combo) + list(analytic)]
    return out


def mix(X: np.ndarray, y: np.ndarray, cands: Sequence[Sequence[int]],
        floor: float = LOO_FLOOR) -> tuple[np.ndarray, float, float, np.ndarray]:
    """The candidates' fits on `X` (target networks x basis columns) averaged with weights E^(-N/2), E each one's
    LOO error of log latency (at least `floor` squared); returns (weight per column, constant, LOO RMSE of log
    latency of the mix, weight per candidate).

    Errors below the floor count as equal: two candidates that both fit the target exactly (LOO error ~1e-32)
    share the weight instead of one winning on floating-point round-off, which differs between BLAS builds.
    Candidates weighted under `MIN_SHARE` of the best one are dropped (they would only add noise to the table).
    """
    loo = np.column_stack([_loo_predictions(X[:, c], y) for c in cands])
    err = np.maximum(np.mean(np.log(np.maximum(loo, 1e-9) / y[:, None]) ** 2, axis=0), floor ** 2)
    logw = -0.5 * len(y) * np.log(err)
    share = np.exp(logw - logw.max())   # the best candidate has 1
    share = np.where(share >= MIN_SHARE, share, 0.0)
    share /= share.sum()
    weights, const = np.zeros(X.shape[1]), 0.0
    for c, s in zip(cands, share):
        if s > 0:
            w = _fit(X[:, c], y)
            weights[list(c)] += s * w[:-1]
            const += s * w[-1]
    mixed = loo @ share
    return weights, float(const), float(np.sqrt(np.mean(np.log(np.maximum(mixed, 1e-9) / y) ** 2))), share


def _check(sources: Sequence[LGBMLatencyPredictor], archs: Sequence[str], y: np.ndarray,
           space: tuple[str, dict | None, int] | None) -> tuple[str, dict | None, int]:
    """The space spec of the transfer, after `few_shot`'s input checks (see there)."""
    if len(y) != len(archs):
        raise InputError(f"few-shot transfer got {len(archs)} archs but {len(y)} latencies")
    if len(y) < 3:
        raise InputError(f"few-shot transfer needs at least 3 target measurements, got {len(y)}")
    if not np.all(np.isfinite(y) & (y > 0)):
        bad = int(np.argmax(~(np.isfinite(y) & (y > 0))))
        raise InputError(f"few-shot transfer: latency {float(y[bad])} of {archs[bad]} is not a positive number")
    if not sources and space is None:
        raise InputError("few-shot transfer needs at least one source predictor or the space")
    spec = (sources[0].space, sources[0].space_options, sources[0].num_classes) if sources else space
    for s in sources:
        if (s.space, s.space_options or {}, s.num_classes) != (spec[0], spec[1] or {}, spec[2]):
            raise InputError(f"source predictors belong to different spaces: {spec[0]} and {s.space} "
                             "(or other space options / class counts)")
    return spec


def few_shot(sources: Sequence[LGBMLatencyPredictor], archs: Sequence[str], y: Sequence[float], *,
             source_names: Sequence[str] | None = None, space: tuple[str, dict | None, int] | None = None,
             max_sources: int = 2, seed: int = 0) -> tuple[LGBMLatencyPredictor, TransferFit]:
    """A predictor for the device that measured `y` on `archs`, from `sources` on other devices.

    Args:
        sources: predictors of other devices, all of one space; may be empty when `space` is given (then the
            analytic prior alone is fitted: a calibration from a few measurements).
        archs, y: the target device's measured networks (canonical strings) and latencies (ms).
        source_names: names of the sources for the report (default source0, source1, ...).
        space: (name, options, num_classes) of the space, when there are no sources to take it from.
        max_sources: most source devices in one candidate model.
        seed: seed of the block model.

    Raises:
        InputError (a ValueError): fewer than 3 samples, as many archs as latencies not given, a latency that is
            not a positive finite number, neither sources nor a space, or sources of different spaces.
    """
    y = np.asarray(y, float)
    spec = _check(sources, archs, y, space)
    names = list(source_names or [f"source{i}" for i in range(len(sources))])
    model = LGBMLatencyPredictor(*spec, correction=False, seed=seed)
    space_obj = model.space_

    # the basis, per block: every block the space can produce (exactly where the space can enumerate them)
    layers = {str(lc.key): lc for lc in space_obj.enumerate_layers()[0]}
    rows = np.empty((len(y), len(ANALYTIC) + len(sources)))
    for i, a in enumerate(archs):
        lcs = space_obj.layer_costs(space_obj.decode(a))
        for lc in lcs:
            layers.setdefault(str(lc.key), lc)
        keys = [str(lc.key) for lc in lcs]
        rows[i, :len(ANALYTIC)] = sum(analytic_terms(lc) for lc in lcs)
        rows[i, len(ANALYTIC):] = [s.lookup_.sums([keys], s._fallback)[0] for s in sources]
    scale = np.maximum(np.abs(rows).max(0), 1e-12)
    cands = candidates(range(len(ANALYTIC)), range(len(ANALYTIC), rows.shape[1]), max_sources)
    w, const, loo, share = mix(rows / scale, y, cands)
    weights = w / scale

    keys = list(layers)
    basis = np.column_stack([np.array([analytic_terms(layers[k]) for k in keys])] +
                            [s.lookup_.sums([[k] for k in keys], s._fallback) - s.lookup_.overhead_
                             for s in sources])
    model.fit_costs({k: max(float(c), 0.0) for k, c in zip(keys, basis @ weights)},
                    const + sum(weights[len(ANALYTIC) + j] * s.lookup_.overhead_ for j, s in enumerate(sources)))
    return model, _report(names, rows, y, weights, const, loo, cands, share)


def _report(names: list[str], rows: np.ndarray, y: np.ndarray, weights: np.ndarray, const: float, loo: float,
            cands: list[list[int]], share: np.ndarray) -> TransferFit:
    """The `TransferFit` of a mix: the basis terms it uses, the sources that carry at least `MIN_SHARE` of the
    target networks' predicted latency, and the candidates it kept."""
    basis_names = list(ANALYTIC) + [f"source:{n}" for n in names]
    used = [c for c in range(len(weights)) if weights[c] > 0]
    carried = weights * rows.mean(0)
    sources = [basis_names[c][7:] for c in used if c >= len(ANALYTIC) and carried[c] >= MIN_SHARE * y.mean()]
    kept = [{"model": _label(c, basis_names), "weight": float(s)} for c, s in zip(cands, share) if s > 0]
    return TransferFit([basis_names[c] for c in used], [float(weights[c]) for c in used], const, loo, sources,
                       sorted(kept, key=lambda d: -d["weight"]))


def _label(cols: Sequence[int], basis_names: list[str]) -> str:
    """A candidate's name: its sources joined by '+', plus '+analytic' when the analytic terms are in."""
    srcs = [basis_names[c][7:] for c in cols if c >= len(ANALYTIC)]
    analytic = any(c < len(ANALYTIC) for c in cols)
    return "+".join(srcs + (["analytic"] if analytic else []))
