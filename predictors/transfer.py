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
  where channels do not matter, the fit gives both depthwise terms alike;
- the block costs of the source predictors (`--init-from`), i.e. what each source device charges for the block.

A network's latency is a constant plus the sum of its blocks, so every basis term sums to a network-level feature
and the mix is a non-negative least-squares fit on the N target networks. The analytic terms are always in; source
devices join greedily (at most `max_sources`) while they lower the leave-one-out error of log latency by 5 % or
more, so a source that does not resemble the target is left out rather than trusted. The result is an ordinary
`LGBMLatencyPredictor` without the network correction (N networks are too few to learn one): per-block costs for
every block the space can produce plus a LightGBM block model, fitted to those costs, for blocks outside that list.
It saves, loads, predicts and evaluates like any other model.

Source block costs are the sources' block tables (measured or fitted), not their network-corrected predictions:
the mix must stay additive over blocks to become a table.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import nnls

from nas.errors import InputError
from predictors.models import LGBMLatencyPredictor, LookupSum

ANALYTIC = ("dense_macs", "depthwise_macs", "act_elems", "params", "convs", "ragged_depthwise_macs")
SIMD_CHANNELS = 4   # depthwise channel counts that are not a multiple of this are "ragged" (see the module)
LOO_FLOOR = 0.005   # LOO RMSE of log latency below which fits count as equal (0.5 %, below timing noise)


def analytic_terms(layer) -> np.ndarray:
    """The analytic basis of one `LayerCost` (order: `ANALYTIC`)."""
    out = np.zeros(len(ANALYTIC))
    for c in layer.convs:
        depthwise = c.groups == c.cin and c.groups > 1
        out[(5 if c.cin % SIMD_CHANNELS else 1) if depthwise else 0] += c.macs
        out[2] += c.cout * c.hw_out ** 2 + c.cin * c.hw_in ** 2
        out[3] += c.params
        out[4] += 1
    return out


@dataclass
class TransferFit:
    """What the few-shot fit chose: basis names, their weights (in ms per basis unit), the constant and the
    leave-one-out RMSE of log latency on the target samples."""

    basis: list[str]
    weights: list[float]
    constant_ms: float
    loo_log_rmse: float
    sources: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"basis": self.basis, "weights": self.weights, "constant_ms": self.constant_ms,
                "loo_log_rmse": self.loo_log_rmse, "sources": self.sources}


def _nnls(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return nnls(np.column_stack([X, np.ones(len(X))]), y)[0]


def _loo(X: np.ndarray, y: np.ndarray) -> float:
    """Leave-one-out mean squared error of log latency of the NNLS fit."""
    err = 0.0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        w = _nnls(X[keep], y[keep])
        err += (np.log(max(float(X[i] @ w[:-1] + w[-1]), 1e-9)) - np.log(y[i])) ** 2
    return err / len(y)


def select(X: np.ndarray, y: np.ndarray, base: Sequence[int], pool: Sequence[int], max_add: int,
           min_gain: float = 0.05, floor: float = LOO_FLOOR) -> tuple[list[int], float]:
    """Columns `base` plus up to `max_add` of `pool`, added greedily while each lowers the LOO error by
    at least `min_gain` (relative), then columns removed while a removal lowers it; returns the columns and
    their LOO error.

    Errors are compared at no less than `floor` (an RMSE of log latency, squared here): below it two fits are
    equally good, and the simpler one stays. Without the floor, a target the base columns already fit exactly
    (LOO error ~1e-32) took or dropped a source on floating-point round-off, which differs between BLAS builds.
    """
    def loo(cols: list[int]) -> float:
        return max(_loo(X[:, cols], y), floor ** 2)

    chosen = list(base)
    best = loo(chosen)
    for _ in range(max_add):
        trials = [(loo(chosen + [j]), j) for j in pool if j not in chosen]
        if not trials:
            break
        err, j = min(trials)
        if err > best * (1 - min_gain):
            break
        chosen.append(j)
        best = err
    while len(chosen) > 1:   # then drop any term whose removal lowers the error (an analytic term can overfit)
        err, j = min((loo([c for c in chosen if c != j]), j) for j in chosen)
        if err >= best:
            break
        chosen.remove(j)
        best = err
    return chosen, best


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
        max_sources: most source devices mixed in.
        seed: seed of the block model.

    Raises:
        InputError (a ValueError): fewer than 3 samples, as many archs as latencies not given, a latency that is
            not a positive finite number, neither sources nor a space, or sources of different spaces.
    """
    y = np.asarray(y, float)
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
    cols, _ = select(rows / scale, y, range(len(ANALYTIC)), range(len(ANALYTIC), rows.shape[1]), max_sources)
    loo = _loo(rows[:, cols] / scale[cols], y)
    w = _nnls(rows[:, cols] / scale[cols], y)
    weights, const = w[:-1] / scale[cols], float(w[-1])

    keys = list(layers)
    basis = np.column_stack([np.array([analytic_terms(layers[k]) for k in keys])] +
                            [s.lookup_.sums([[k] for k in keys], s._fallback) - s.lookup_.overhead_
                             for s in sources])
    costs = basis[:, cols] @ weights
    overhead = const + sum(wt * sources[c - len(ANALYTIC)].lookup_.overhead_
                           for c, wt in zip(cols, weights) if c >= len(ANALYTIC))
    model.lookup_ = LookupSum(model.space, model.space_options, model.num_classes)
    model.lookup_.costs_ = {k: max(float(c), 0.0) for k, c in zip(keys, costs)}
    model.lookup_.overhead_ = float(overhead)
    model.fit_block_model()
    basis_names = list(ANALYTIC) + [f"source:{n}" for n in names]
    fit = TransferFit([basis_names[c] for c in cols], [float(v) for v in weights], const,
                      float(np.sqrt(loo)), [basis_names[c][7:] for c in cols if c >= len(ANALYTIC)])
    return model, fit
