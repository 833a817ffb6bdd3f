"""Linear readout: multinomial logistic regression on the array backend.

Used to evaluate learned representations (LPL layers, EqProp features).
Loss: mean cross-entropy of ``softmax(X W^T + b)`` plus ``l2/2 ||W||^2``;
gradient ``(softmax - onehot)^T X / N + l2 W``. Features are standardised
with the training statistics. ``solver="lbfgs"`` is scipy's L-BFGS on the host
(loss and gradient evaluated on the arrays' backend, float64); ``"adam"`` is
full-batch Adam that stays on the device; ``"auto"`` takes L-BFGS for host
arrays and Adam for GPU arrays (``backend.capabilities(xp).on_gpu``), where the
host round trip per L-BFGS iteration would dominate.

Bad input gets a ValueError naming the argument: non-finite or empty ``X``/``F``,
a feature count that differs from the fitted one, labels ``y`` that are not
integers (an integer dtype, or floats with integral values such as ``3.0``) or
not one per row, ``l2 < 0``, ``max_iter < 1``. Labels may be any integers: the
classes are the sorted distinct training labels (``classes_``). ``predict`` on
an empty batch returns an empty array.
"""
from __future__ import annotations

import numpy as np

from .backend import capabilities, get_xp, to_numpy
from .ops.elementwise import softmax
from .optim import _check_finite, _check_int, _check_labels, _check_number

__all__ = ["LogisticRegression", "participation_ratio"]
SOLVERS = ("auto", "lbfgs", "adam")


def participation_ratio(F):
    """Participation ratio ``(sum_i l_i)^2 / sum_i l_i^2`` of the covariance eigenvalues of features F (N, D).

    1 when one direction carries all the variance, D when the variance is spread evenly.
    """
    F = np.asarray(to_numpy(F), dtype=np.float64)
    if F.ndim < 1 or F.shape[0] == 0 or F.size == 0:
        raise ValueError(f"F must be a non-empty (N, D) array of features, got shape {tuple(F.shape)}")
    F = F.reshape(F.shape[0], -1)
    _check_finite(np, F, "F")
    Fc = F - F.mean(axis=0)
    lam = np.linalg.eigvalsh(Fc.T @ Fc / max(F.shape[0] - 1, 1))
    lam = np.clip(lam, 0, None)
    return float(lam.sum() ** 2 / max((lam**2).sum(), 1e-300))


class LogisticRegression:
    """Multinomial logistic regression (scikit-learn-like ``fit`` / ``predict`` / ``score``).

    Parameters
    ----------
    l2 : float, ridge penalty on the weights
    max_iter : optimiser iterations
    standardize : z-score features with the training mean and standard deviation
    solver : "auto", "lbfgs" or "adam" (see the module docstring)

    Attributes
    ----------
    coef_ : (n_classes, n_features), intercept_ : (n_classes,), classes_ : (n_classes,) sorted labels
    """

    def __init__(self, l2=1e-3, max_iter=300, standardize=True, solver="auto"):
        self.l2 = _check_number(l2, "l2", low=0)
        self.max_iter = _check_int(max_iter, "max_iter", minimum=1)
        self.standardize = bool(standardize)
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        self.solver = solver

    @staticmethod
    def _rows(X, name="X"):
        """``X`` as a finite (N, D) array of the backend it came on."""
        xp = get_xp(X)
        X = xp.asarray(X)
        if X.ndim < 2:
            raise ValueError(f"{name} must have shape (N, features...), got {tuple(X.shape)}")
        if X.dtype == bool or not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
            raise ValueError(f"{name} must hold real numbers, got dtype {X.dtype}")
        X = X.reshape(X.shape[0], int(np.prod(X.shape[1:])))
        _check_finite(xp, X, name)
        return X

    def _fitted(self, X):
        if not hasattr(self, "coef_"):
            raise ValueError("this LogisticRegression is not fitted yet: call fit(X, y) first")
        X = self._rows(X)
        if X.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features but the model was fitted on {self.coef_.shape[1]}")
        return X

    def _prep(self, X):
        if self.standardize:
            X = (X - self.mean_) / self.std_
        return X

    def _loss_grad(self, xp, X, Y, W, b):
        n = X.shape[0]
        P = softmax(X @ W.T + b)
        loss = -xp.sum(Y * xp.log(P + 1e-12)) / n + 0.5 * self.l2 * xp.sum(W * W)
        G = (P - Y) / n
        return loss, G.T @ X + self.l2 * W, G.sum(axis=0)

    def fit(self, X, y):
        xp = get_xp(X)
        X = self._rows(X)
        if X.shape[0] == 0:
            raise ValueError("X is empty: fit needs at least one sample")
        solver = self.solver if self.solver != "auto" else ("adam" if capabilities(xp).on_gpu else "lbfgs")
        # L-BFGS runs in float64 (scipy's line search); Adam keeps a floating input's dtype
        X = X.astype(np.float64 if solver == "lbfgs" or not np.issubdtype(X.dtype, np.floating) else X.dtype)
        y_host = to_numpy(y)
        if np.ndim(y_host) == 1 and y_host.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y_host.shape[0]} labels")
        y_host = _check_labels(y_host, X.shape[0], name="y", n_name="X")
        self.classes_ = np.unique(y_host)
        k, d = len(self.classes_), X.shape[1]
        self.mean_ = X.mean(axis=0) if self.standardize else 0.0
        self.std_ = X.std(axis=0) + 1e-8 if self.standardize else 1.0
        Xs = self._prep(X)
        Y = xp.asarray(np.searchsorted(self.classes_, y_host)[:, None] == np.arange(k)[None], dtype=Xs.dtype)
        if solver == "lbfgs":
            from scipy.optimize import minimize  # noqa: PLC0415

            def fun(theta):
                W, b = xp.asarray(theta[: k * d].reshape(k, d)), xp.asarray(theta[k * d:])
                loss, gW, gb = self._loss_grad(xp, Xs, Y, W, b)
                return float(loss), np.concatenate([to_numpy(gW).ravel(), to_numpy(gb)])

            res = minimize(fun, np.zeros(k * d + k), jac=True, method="L-BFGS-B",
                           options={"maxiter": self.max_iter})
            self.coef_, self.intercept_ = xp.asarray(res.x[: k * d].reshape(k, d)), xp.asarray(res.x[k * d:])
        else:
            from .optim import Adam  # noqa: PLC0415

            W, b = xp.zeros((k, d), dtype=Xs.dtype), xp.zeros(k, dtype=Xs.dtype)
            opt = Adam([W, b], lr=0.05)
            for _ in range(self.max_iter):
                _, gW, gb = self._loss_grad(xp, Xs, Y, W, b)
                opt.step([gW, gb])
            self.coef_, self.intercept_ = W, b
        return self

    def decision_function(self, X):
        X = self._fitted(X)
        if self.coef_.dtype != X.dtype:
            X = X.astype(self.coef_.dtype)
        return self._prep(X) @ self.coef_.T + self.intercept_

    def predict(self, X):
        idx = to_numpy(self.decision_function(X).argmax(axis=1))
        return self.classes_[idx]

    def score(self, X, y):
        """Top-1 accuracy (``X`` must not be empty)."""
        pred = self.predict(X)
        if pred.shape[0] == 0:
            raise ValueError("X is empty: the accuracy of no samples is undefined")
        y = _check_labels(y, pred.shape[0], name="y", n_name="X")
        return float(np.mean(pred == y))
