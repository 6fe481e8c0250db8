"""Latency predictors as scikit-learn-style estimators over architecture strings.

`X` is a sequence of canonical arch strings of one search space, `y` latencies in ms. The estimators are
scikit-learn regressors (`BaseEstimator`, `RegressorMixin`): hyper-parameters are explicit `__init__` keywords
(`get_params`, `set_params` and `sklearn.base.clone` work), `fit` returns `self`, `predict` returns ms and `score`
the coefficient of determination. Fitted LightGBM parts are kept as `lightgbm.Booster`s whether fitted here or
loaded from their text files (`predictors.io`), so a loaded predictor is the same object as a fitted one.

- `FlopsLinear`: latency = a * FLOPs + b (baseline).
- `LookupSum`: latency = overhead + sum of per-block costs, from a measured block table or, for devices timed
  only end to end, fitted to whole networks by non-negative least squares (baseline).
- `LGBMLatencyPredictor`: per-block costs (measured or fitted; a block model, an analytic prior times a
  LightGBM ratio, costs blocks never seen), summed, then multiplied by exp(a network-level LightGBM correction)
  learned from whole-network measurements, which captures what block sums miss (fusion, overheads). The
  correction is trained on out-of-fold block sums (cross-fitting) so it learns the errors the sum makes on unseen
  networks. A second, generic correction uses only features any network has, so networks that are not points of
  the space (timm models, `predict_defs`) are corrected too; it learns from the space's networks and a profile's
  extra networks.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from core.errors import InputError
from hardware_profiles.block_costs import BlockCosts
from predictors.features import (GENERIC_FEATURES, block_matrix, generic_matrix, generic_row, network_matrix,
                                 prior_matrix)


def _space(name: str, options: dict[str, Any] | None, num_classes: int):
    from search_spaces import get_space

    return get_space(name, options or {}, num_classes=num_classes)


class _Base(RegressorMixin, BaseEstimator):
    """Shared plumbing: the space and decoding (`score`, `get_params`, `set_params` come from scikit-learn)."""

    def __init__(self, space: str = "mobilenet", space_options: dict[str, Any] | None = None,
                 num_classes: int = 1000):
        self.space, self.space_options, self.num_classes = space, space_options, num_classes

    @property
    def space_(self):
        if getattr(self, "_space_obj", None) is None:
            self._space_obj = _space(self.space, self.space_options, self.num_classes)
        return self._space_obj

    def _keys(self, X: Sequence[str]) -> list[list[str]]:
        return self._costed(X)[1]

    def _costed(self, X: Sequence[str]) -> tuple[list, list[list[str]], np.ndarray]:
        """(genotypes, cost-key lists, FLOPs) of arch strings, from one `layer_costs` walk per arch."""
        archs = [self.space_.decode(a) for a in X]
        keys, flops = [], np.empty(len(archs))
        for i, arch in enumerate(archs):   # one arch at a time: keeping every LayerCost alive slows the GC
            layers = self.space_.layer_costs(arch)
            keys.append([str(lc.key) for lc in layers])
            flops[i] = sum(lc.macs for lc in layers)
        return archs, keys, flops

    def predict(self, X: Sequence[str]) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError


class FlopsLinear(_Base):
    """Latency proportional to FLOPs plus a constant, fitted by least squares."""

    def fit(self, X: Sequence[str], y: Sequence[float]) -> FlopsLinear:
        flops = np.array([self.space_.flops(self.space_.decode(a)) for a in X], float)
        self.coef_ = np.polyfit(flops, np.asarray(y, float), 1)
        return self

    def predict(self, X: Sequence[str]) -> np.ndarray:
        flops = np.array([self.space_.flops(self.space_.decode(a)) for a in X], float)
        return np.polyval(self.coef_, flops)


class LookupSum(_Base):
    """Overhead plus the sum of per-block costs.

    Args:
        block_table: {cost key: ms} measured per block (with `overhead_ms` the runtime's fixed cost, counted
            once); when None, the costs are fitted to whole networks in `fit`.
    """

    def __init__(self, space: str = "mobilenet", space_options: dict[str, Any] | None = None,
                 num_classes: int = 1000, block_table: dict[str, float] | None = None, overhead_ms: float = 0.0):
        super().__init__(space, space_options, num_classes)
        self.block_table, self.overhead_ms = block_table, overhead_ms

    def fit(self, X: Sequence[str], y: Sequence[float]) -> LookupSum:
        return self.fit_keys(None if self.block_table is not None else self._keys(X), y)

    def fit_keys(self, key_lists: list[list[str]] | None, y: Sequence[float]) -> LookupSum:
        """`fit` from networks already lowered to cost-key lists (unused when a block table is given)."""
        if self.block_table is not None:
            self.blocks_ = BlockCosts.measured(self.block_table, self.overhead_ms)
            return self
        from hardware_profiles.importer import fit_additive

        self.blocks_ = fit_additive(key_lists, np.asarray(y, float)).costs
        return self

    def set_costs(self, costs_ms: dict[str, float], overhead_ms: float) -> LookupSum:
        """The fitted state, whoever computed it (`fit`, a few-shot transfer, a saved folder): each block's cost
        net of the overhead, and the overhead counted once per network (`hardware_profiles.block_costs`)."""
        self.blocks_ = BlockCosts(costs_ms, overhead_ms)
        return self

    @property
    def costs_(self) -> dict[str, float]:
        """{cost key: ms net of the overhead} as fitted (what is saved)."""
        return self.blocks_.costs

    @costs_.setter
    def costs_(self, costs_ms: dict[str, float]) -> None:
        self.set_costs(costs_ms, self.overhead_)

    @property
    def overhead_(self) -> float:
        return self.blocks_.overhead_ms

    def sums(self, key_lists: list[list[str]], fallback=None) -> np.ndarray:
        """Summed latency of networks given as key lists; keys the table cannot cost (`BlockCosts.cost`) are
        costed by `fallback(keys)`."""
        return self.blocks_.sums(key_lists, fallback)

    def predict(self, X: Sequence[str]) -> np.ndarray:
        return self.sums(self._keys(X))


GENERIC_MIN_CHILD = 10   # leaf size of the generic network model (trained on tens to hundreds of networks)
BLOCK_LEAVES = 15        # leaves per tree of the block model (thousands of blocks in a rich profile)


class LGBMLatencyPredictor(_Base):
    """Block costs summed, times a learned network-level correction.

    Args:
        space, space_options, num_classes: the search space the archs belong to.
        block_table, overhead_ms: measured per-block costs (a profile's table); None to fit them to networks.
        n_estimators, learning_rate, num_leaves, min_child_samples: the network correction's LightGBM settings.
        block_estimators: trees of the block model (costs blocks missing from the table).
        n_folds: folds of the cross-fitting that produces the correction's training sums.
        correction: learn the network-level correction (False = block sum only).
        seed: random seed of LightGBM and the folds.
    """

    def __init__(self, space: str = "mobilenet", space_options: dict[str, Any] | None = None,
                 num_classes: int = 1000, block_table: dict[str, float] | None = None, overhead_ms: float = 0.0,
                 n_estimators: int = 100, learning_rate: float = 0.05, num_leaves: int = 4,
                 min_child_samples: int = 40, block_estimators: int = 600, n_folds: int = 5,
                 correction: bool = True, seed: int = 0):
        super().__init__(space, space_options, num_classes)
        self.block_table, self.overhead_ms = block_table, overhead_ms
        self.n_estimators, self.learning_rate = n_estimators, learning_rate
        self.num_leaves, self.min_child_samples = num_leaves, min_child_samples
        self.block_estimators, self.n_folds, self.correction, self.seed = block_estimators, n_folds, correction, seed

    def _lookup(self) -> LookupSum:
        return LookupSum(self.space, self.space_options, self.num_classes, self.block_table, self.overhead_ms)

    def _lgbm(self, n_estimators: int, min_child_samples: int, num_leaves: int | None = None):
        import lightgbm as lgb

        return lgb.LGBMRegressor(n_estimators=n_estimators, learning_rate=self.learning_rate,
                                 num_leaves=num_leaves or self.num_leaves, min_child_samples=min_child_samples,
                                 subsample=0.8, subsample_freq=1, colsample_bytree=0.8, random_state=self.seed,
                                 verbose=-1, n_jobs=1)

    def fit_block_model(self) -> None:
        """Fit the block model (costs blocks missing from the table) to the table's positive costs.

        A block's cost is an analytic prior (a non-negative least-squares mix of `prior_basis` terms, fitted to
        relative error) times exp(a LightGBM model of the log ratio). Trees alone cannot extrapolate: a block
        larger or smaller than every measured one would cost as the nearest measured one; the prior scales, and
        the trees learn how each kind of block departs from it (what the prior gained is in the README,
        "Measured design decisions").

        A cost of zero means the fit gave the block nothing (e.g. a skip connection), not that it was measured at
        zero, so zeros are left out of the log-cost regression while at least two positive costs remain; with
        fewer (constant latencies, a device the fit explains by its overhead alone) every block is taken at
        `MIN_BLOCK_MS` or its cost, so unseen blocks cost (almost) nothing too instead of failing the fit.
        """
        costs = self.lookup_.costs_
        known = [k for k, v in costs.items() if v > 0]
        if len(known) < 2:
            known = list(costs)
        if len(known) < 2:
            raise InputError(f"{len(costs)} block cost(s) are too few to fit a block model; the networks must "
                             "hold at least two distinct blocks")
        y = np.array([max(costs[k], MIN_BLOCK_MS) for k in known])
        self.block_prior_, self.block_model_ = self._fit_blocks(known, y)
        self.block_interval_ = self._block_interval(known, y)

    def _fit_blocks(self, keys: list[str], y: np.ndarray) -> tuple[list[float], Any]:
        """(prior weights, LightGBM ratio model) fitted to blocks `keys` costing `y` ms (see `fit_block_model`)."""
        from scipy.optimize import nnls

        basis = prior_matrix(keys)
        scale = np.maximum(basis.max(axis=0), 1e-12)
        weights = nnls(basis / scale / y[:, None], np.ones(len(y)))[0] / scale
        prior = [float(w) for w in weights] if (basis @ weights > 0).all() else [0.0, 0.0, 1.0]
        target = np.log(y / np.maximum(prior_matrix(keys) @ np.asarray(prior), MIN_BLOCK_MS))
        return prior, self._lgbm(self.block_estimators, 3, BLOCK_LEAVES).fit(block_matrix(keys), target).booster_

    def _block_interval(self, keys: list[str], y: np.ndarray) -> list[float]:
        """The 10th and 90th percentile of log(measured / block model) on blocks of a kind the model was not fit
        on: folds hold out whole groups of one block type and output width, so a fold's blocks have no measured
        sibling of their size, as a new network's unmeasured blocks often have none. `predict_interval` widens a
        prediction by it in proportion to the share of the block sum the block model priced."""
        from search_spaces.costs import parse_cost_key

        groups = [(key.op, key.out_shape[0]) for key in map(parse_cost_key, keys)]
        names = sorted(set(groups))
        if len(names) < self.n_folds:
            return [0.0, 0.0]
        fold_of = dict(zip(names, np.random.default_rng(self.seed).permutation(len(names)) % self.n_folds))
        folds = np.array([fold_of[g] for g in groups])
        resid = np.empty(len(y))
        for f in range(self.n_folds):
            fit_keys = [k for k, g in zip(keys, folds) if g != f]
            out = [k for k, g in zip(keys, folds) if g == f]
            prior, model = self._fit_blocks(fit_keys, y[folds != f])
            pred = np.maximum(prior_matrix(out) @ np.asarray(prior), MIN_BLOCK_MS) * \
                np.exp(model.predict(block_matrix(out)))
            resid[folds == f] = np.log(y[folds == f] / pred)
        return [float(q) for q in np.quantile(resid, [0.1, 0.9])]

    def _prior(self, keys: list[str]) -> np.ndarray:
        return np.maximum(prior_matrix(keys) @ np.asarray(self.block_prior_), MIN_BLOCK_MS)

    def _modelled(self, keys: list[str]) -> np.ndarray:
        """The block model's cost of `keys` (ms)."""
        if not keys:
            return np.zeros(0)
        return self._prior(keys) * np.exp(self.block_model_.predict(block_matrix(keys)))

    def _fallback(self, keys: list[str], lookup: LookupSum | None = None) -> np.ndarray:
        """Costs of blocks missing from the table: the block model's, except for a block with TensorFlow 'same'
        padding whose symmetric twin was measured: the twin's cost times the block model's ratio of the two.
        The pad operation is all that differs, so the measured twin anchors it; a profile that never timed a
        same-padded block (its model cannot tell them apart) prices it as the twin, which on onnxruntime (it
        folds the pad into the conv) is what it costs. `lookup`: the table the keys are missing from (default the
        fitted one)."""
        from search_spaces.costs import unpadded_key

        cost = self._modelled(keys)
        blocks = (lookup or self.lookup_).blocks_
        anchored = [(i, twin, ms) for i, key in enumerate(keys)
                    if (twin := unpadded_key(key)) is not None and (ms := blocks.cost(twin) or 0.0) > 0]
        if anchored:
            at, twins, ms = zip(*anchored)
            cost[list(at)] *= np.array(ms) / self._modelled(list(twins))
        return cost

    def _sums(self, lookup: LookupSum, key_lists: list[list[str]]) -> np.ndarray:
        return lookup.sums(key_lists, lambda keys: self._fallback(keys, lookup))

    def fit_costs(self, costs_ms: dict[str, float], overhead_ms: float) -> LGBMLatencyPredictor:
        """Fit from block costs (net of the overhead) computed elsewhere, e.g. by a few-shot transfer: the block
        table and the block model, no network correction (`correction` must be off)."""
        if self.correction:
            raise ValueError("fit_costs fits block costs only; make the predictor with correction=False")
        self.saved_meta_ = None
        self.lookup_ = self._lookup().set_costs(costs_ms, overhead_ms)
        self.fit_block_model()
        return self

    def set_fitted(self, costs_ms: dict[str, float], overhead_ms: float, block_prior: list[float], block_model: Any,
                   network_model: Any = None, generic_model: Any = None, generic_interval: list[float] | None = None,
                   block_interval: list[float] | None = None, saved: dict[str, Any] | None = None
                   ) -> LGBMLatencyPredictor:
        """The fitted state as `predictors.io` saved it (LightGBM `Booster`s, block costs, intervals): what a
        loaded predictor is made of, the same attributes `fit` sets, plus `saved_meta_`, the metadata of the
        folder it came from (what `predictors.io.save` re-saves it with; a refit drops it)."""
        self.saved_meta_ = saved
        self.lookup_ = self._lookup().set_costs(costs_ms, overhead_ms)
        self.block_prior_, self.block_model_, self.block_interval_ = list(block_prior), block_model, block_interval
        if self.correction:
            self.network_model_, self.generic_model_ = network_model, generic_model
            self.generic_interval_ = generic_interval
        return self

    def fit(self, X: Sequence[str], y: Sequence[float], extra: Sequence[tuple[Any, float]] = ()
            ) -> LGBMLatencyPredictor:
        """Fit to arch strings `X` of the space and their latencies `y`; `extra`: (NetworkDef, ms) of measured
        networks outside the space (a profile's extra table), which only the generic network model learns from."""
        y = np.asarray(y, float)
        self.saved_meta_ = None
        archs, keys, flops = self._costed(X)
        self.lookup_ = self._lookup().fit_keys(keys, y)
        self.fit_block_model()
        if not self.correction:
            return self
        if self.block_table is not None:
            sums = self._sums(self.lookup_, keys)
        else:   # out-of-fold sums: the correction must learn the sum's errors on networks it was not fit on
            sums = np.empty(len(y))
            folds = np.random.default_rng(self.seed).permutation(len(y)) % self.n_folds
            for f in range(self.n_folds):
                part = self._lookup().fit_keys([k for k, g in zip(keys, folds) if g != f], y[folds != f])
                sums[folds == f] = self._sums(part, [k for k, g in zip(keys, folds) if g == f])
        feats = network_matrix(self.space_.encode(archs), sums, flops)
        self.network_model_ = self._lgbm(self.n_estimators, self.min_child_samples).fit(
            feats, np.log(y / np.maximum(sums, 1e-9))).booster_
        self._fit_generic(archs, sums, y, extra)
        return self

    def _fit_generic(self, archs: list, sums: np.ndarray, y: np.ndarray,
                     extra: Sequence[tuple[Any, float]]) -> None:
        """The generic network model: log(measured / block sum) from features any network has (`generic_row`),
        learned from the space's networks (genotypes `archs`, block sums `sums`) and the extra ones; what
        corrects a network that is not a point of the space (a timm model), whose space encoding does not exist.
        Rows are made one network at a time: keeping every network's `LayerCost`s alive slows the GC."""
        from search_spaces.blocks import layer_costs

        extra_keys = [[str(lc.key) for lc in layer_costs(net)] for net, _ in extra]
        extra_sums = self._sums(self.lookup_, extra_keys)
        rows = [generic_row(self.space_.layer_costs(a), s) for a, s in zip(archs, sums)]
        rows += [generic_row(layer_costs(net), s) for (net, _), s in zip(extra, extra_sums)]
        all_sums = np.concatenate([sums, extra_sums])
        target = np.log(np.concatenate([y, [ms for _, ms in extra]]) / np.maximum(all_sums, 1e-9))
        feats = np.asarray(rows, dtype=np.float64).reshape(len(target), len(GENERIC_FEATURES))
        self.generic_model_ = self._lgbm(self.n_estimators, GENERIC_MIN_CHILD).fit(feats, target).booster_
        # how far off it is on networks it was not fit on: out-of-fold residuals give the prediction interval
        folds = np.random.default_rng(self.seed).permutation(len(target)) % self.n_folds
        resid = np.empty(len(target))
        for f in range(self.n_folds):
            part = self._lgbm(self.n_estimators, GENERIC_MIN_CHILD).fit(feats[folds != f], target[folds != f])
            resid[folds == f] = target[folds == f] - part.predict(feats[folds == f])
        self.generic_interval_ = [float(q) for q in np.quantile(resid, [0.1, 0.9])]

    def predict_defs(self, nets: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(block sums, predictions, blocks costed by the block model per network) of `NetworkDef`s: networks
        outside the space, corrected by the generic network model (block sums alone without a correction).
        `predict_interval` gives their 80 % intervals."""
        layer_lists, keys, sums = self._defs_costed(nets)
        unseen = [len(self.lookup_.blocks_.missing(ks)) for ks in keys]
        return sums, self._generic_corrected(layer_lists, sums), unseen

    def _defs_costed(self, nets: Sequence[Any]) -> tuple[list, list[list[str]], np.ndarray]:
        """(layer costs, cost keys, block sums) per `NetworkDef`."""
        from search_spaces.blocks import layer_costs

        layer_lists = [layer_costs(net) for net in nets]
        keys = [[str(lc.key) for lc in layers] for layers in layer_lists]
        return layer_lists, keys, self._sums(self.lookup_, keys)

    def _generic_corrected(self, layer_lists: list, sums: np.ndarray) -> np.ndarray:
        if not self.correction or not len(sums):
            return sums
        return sums * np.exp(self.generic_model_.predict(generic_matrix(layer_lists, sums)))

    def predict_interval(self, nets: Sequence[Any], pred: np.ndarray | None = None) -> np.ndarray:
        """80 % intervals (ms, one [low, high] row per network) of `predict_defs`'s predictions `pred`: the
        generic correction's out-of-fold spread, widened by the block model's (`block_interval_`) times the
        share of the network's block sum the block model priced (a network made of measured blocks only gets
        the first; one priced wholly by the block model both, as if its blocks erred together, which blocks of
        one unseen kind do)."""
        layer_lists, keys, sums = self._defs_costed(nets)
        pred = self._generic_corrected(layer_lists, sums) if pred is None else np.asarray(pred, float)
        generic = np.asarray(getattr(self, "generic_interval_", None) or (0.0, 0.0)) if self.correction else \
            np.zeros(2)
        block = np.asarray(getattr(self, "block_interval_", None) or (0.0, 0.0))
        out = np.empty((len(nets), 2))
        for i, (ks, total) in enumerate(zip(keys, sums)):
            unseen = self.lookup_.blocks_.missing(ks)
            share = min(float(self._fallback(unseen).sum()) / total, 1.0) if unseen and total > 0 else 0.0
            out[i] = pred[i] * np.exp(generic + share * block)
        return out

    def predict(self, X: Sequence[str]) -> np.ndarray:
        return self.predict_parts(X)[1]

    def predict_parts(self, X: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(block sums, predictions, FLOPs) of arch strings, from one lowering per arch, or, in spaces whose
        layers cost independently (`positional_layers`), from a choice matrix and per-(position, choice) tables:
        no per-arch Python at all, which is what makes batch prediction fast."""
        if len(X) == 0:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        tables = self._batch_tables()
        if tables is None:
            archs, keys, flops = self._costed(X)
            sums = self._sums(self.lookup_, keys)

            def encode(rows: slice) -> np.ndarray:
                return self.space_.encode(archs[rows])
        else:
            choices = self.space_.choice_matrix(X)
            at = (np.arange(choices.shape[1]), choices)
            sums = tables.fixed_ms + tables.ms[at].sum(axis=1)
            flops = tables.fixed_macs + tables.macs[at].sum(axis=1)

            def encode(rows: slice) -> np.ndarray:
                return self.space_.encode_choices(choices[rows])
        if not self.correction:
            return sums, sums, flops
        corr = np.concatenate([   # in chunks: one (n, features) float matrix costs more in page faults
            self.network_model_.predict(network_matrix(encode(rows), sums[rows], flops[rows]))
            for rows in (slice(i, i + _CHUNK) for i in range(0, len(sums), _CHUNK))])
        return sums, sums * np.exp(corr), flops

    def _batch_tables(self) -> _BatchTables | None:
        """Block cost (ms) and MACs per (position, choice), cached per fitted block table; None when the space
        has no positional layers."""
        cached = getattr(self, "_batch_", None)
        if cached is not None and cached[0] is self.lookup_:
            return cached[1]
        pos = self.space_.positional_layers()
        tables = None
        if pos is not None:
            layers = [lc for row in pos.table for lc in row] + list(pos.fixed)
            cost = self._sums(self.lookup_, [[str(lc.key)] for lc in layers]) - self.lookup_.overhead_
            shape = (len(pos.table), len(pos.table[0]))
            n = shape[0] * shape[1]
            macs = np.array([lc.macs for lc in layers], float)
            tables = _BatchTables(cost[:n].reshape(shape), self.lookup_.overhead_ + cost[n:].sum(),
                                  macs[:n].reshape(shape), macs[n:].sum())
        self._batch_ = (self.lookup_, tables)
        return tables


_CHUNK = 16384   # rows per network-correction call in the batch path
MIN_BLOCK_MS = 1e-6   # the block model's floor: log-costs need a positive figure (see `fit_block_model`)


@dataclass(frozen=True)
class _BatchTables:
    ms: np.ndarray          # (positions, choices) block cost
    fixed_ms: float         # overhead plus the fixed layers' cost
    macs: np.ndarray        # (positions, choices) block MACs
    fixed_macs: float
