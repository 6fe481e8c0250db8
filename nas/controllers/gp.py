"""A Gaussian process over categorical decisions: the score model of surrogate-steered controllers.

Architectures are points of a product of categorical decisions (`SearchSpace.to_decisions`). The kernel is the
exponentiated Hamming kernel ``k(a, b) = exp(-sum_d w_d [a_d != b_d] / l)`` (the categorical kernel of COMBO,
Oh et al. 2019, and CASMOPOLITAN, Wan et al. 2021), so two networks are alike to the degree they share choices,
and interactions between decisions (a cell whose input never reaches its output through a convolution) are
modelled, where a ridge regression on one-hot features (the older score model) can only add the choices up.

Targets are the *normal scores* of the ranks (a Gaussian copula, as HEBO does with its output warping): a few
broken networks at 10 % accuracy neither bend the fit nor set its scale. The length scale and the noise are
chosen by marginal likelihood on a small grid each time the model is refitted; the fit itself is one Cholesky
factorisation of an n x n matrix (n = candidates with a score, a few hundred at most).

The acquisition is expected improvement over the best normal score so far, the rule of BANANAS-style and
GP-based searches on NAS-Bench-201.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.special import ndtr, ndtri

LENGTH_SCALES = (0.125, 0.25, 0.5, 1.0, 2.0)   # times the number of decisions
NOISES = (1e-3, 1e-2, 0.1, 0.3)                # variance, in units of the normal scores' variance (1)


def normal_scores(y: np.ndarray) -> np.ndarray:
    """Rank-based normal scores of `y` (ties share a rank order by position, which keeps them close)."""
    n = len(y)
    ranks = np.argsort(np.argsort(y, kind="stable"), kind="stable")
    return ndtri((ranks + 0.5) / n)


def hamming(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted count of differing decisions between the rows of `a` (n, D) and `b` (m, D): (n, m)."""
    out = np.zeros((len(a), len(b)))
    for d in range(a.shape[1]):
        out += weights[d] * (a[:, d, None] != b[None, :, d])
    return out


class CategoricalGP:
    """GP regression on decision vectors (see the module).

    Args:
        weights: per-decision weight of a differing choice (default 1 each).
    """

    def __init__(self, weights: np.ndarray | None = None):
        self.weights = weights
        self.length_scale: float | None = None
        self.noise: float | None = None

    def fit(self, X: np.ndarray, y: np.ndarray, choose: bool = True) -> CategoricalGP:
        """Fit to decision rows `X` (n, D; -1 for an unused decision) and raw scores `y`; `choose` re-selects the
        length scale and noise by marginal likelihood (else the last ones are kept)."""
        self.X = np.asarray(X)
        if self.weights is None:
            self.weights = np.ones(self.X.shape[1])
        self.z = normal_scores(np.asarray(y, float))
        dist = hamming(self.X, self.X, self.weights)
        if choose or self.length_scale is None:
            scale = float(self.weights.sum())
            best = None
            for ls in LENGTH_SCALES:
                K = np.exp(-dist / (ls * scale))
                for noise in NOISES:
                    lml = self._lml(K, noise)
                    if best is None or lml > best[0]:
                        best = (lml, ls * scale, noise)
            _, self.length_scale, self.noise = best
        K = np.exp(-dist / self.length_scale) + self.noise * np.eye(len(self.z))
        self._chol = cho_factor(K, lower=True)
        self._alpha = cho_solve(self._chol, self.z)
        return self

    def _lml(self, K: np.ndarray, noise: float) -> float:
        """Log marginal likelihood of the normal scores under kernel matrix `K` plus `noise`."""
        try:
            L = np.linalg.cholesky(K + noise * np.eye(len(K)))
        except np.linalg.LinAlgError:
            return -math.inf
        alpha = np.linalg.solve(L, self.z)
        return float(-0.5 * alpha @ alpha - np.log(np.diag(L)).sum())

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation (in normal-score units) at decision rows `X`."""
        Ks = np.exp(-hamming(np.asarray(X), self.X, self.weights) / self.length_scale)
        mean = Ks @ self._alpha
        v = cho_solve(self._chol, Ks.T)
        var = np.maximum(1.0 - np.einsum("ij,ji->i", Ks, v), 1e-12)
        return mean, np.sqrt(var)

    def expected_improvement(self, X: np.ndarray) -> np.ndarray:
        """Expected improvement over the best normal score seen, at decision rows `X`."""
        mean, sd = self.predict(X)
        gap = mean - float(self.z.max())
        u = gap / sd
        return gap * ndtr(u) + sd * np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
