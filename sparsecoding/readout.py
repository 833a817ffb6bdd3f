"""Linear readout: multinomial logistic regression on the array backend.

Used to evaluate learned representations (LPL layers, EqProp features).
Loss: mean cross-entropy of ``softmax(X W^T + b)`` plus ``l2/2 ||W||^2``;
gradient ``(softmax - onehot)^T X / N + l2 W``. Features are standardised
with the training statistics. On numpy the optimiser is scipy's L-BFGS; on
cupy, full-batch Adam on the device.
"""
from __future__ import annotations

import numpy as np

from .backend import get_xp, to_numpy

__all__ = ["LogisticRegression", "softmax", "participation_ratio"]


def participation_ratio(F):
    """Participation ratio ``(sum_i l_i)^2 / sum_i l_i^2`` of the covariance eigenvalues of features F (N, D).

    1 when one direction carries all the variance, D when the variance is spread evenly.
    """
    F = np.asarray(to_numpy(F), dtype=np.float64).reshape(F.shape[0], -1)
    Fc = F - F.mean(axis=0)
    lam = np.linalg.eigvalsh(Fc.T @ Fc / max(F.shape[0] - 1, 1))
    lam = np.clip(lam, 0, None)
    return float(lam.sum() ** 2 / max((lam**2).sum(), 1e-300))


def softmax(z, axis=-1):
    xp = get_xp(z)
    z = z - z.max(axis=axis, keepdims=True)
    e = xp.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


class LogisticRegression:
    """Multinomial logistic regression (scikit-learn-like ``fit`` / ``predict`` / ``score``).

    Parameters
    ----------
    l2 : float, ridge penalty on the weights
    max_iter : optimiser iterations
    standardize : z-score features with the training mean and standard deviation
    """

    def __init__(self, l2=1e-3, max_iter=300, standardize=True):
        self.l2, self.max_iter, self.standardize = float(l2), int(max_iter), bool(standardize)

    def _prep(self, X):
        X = X.reshape(X.shape[0], -1)
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
        X = X.reshape(X.shape[0], -1).astype(np.float64 if xp is np else X.dtype)
        y_host = to_numpy(y).astype(np.int64)
        if X.shape[0] != y_host.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y_host.shape[0]} labels")
        self.classes_ = np.unique(y_host)
        k, d = len(self.classes_), X.shape[1]
        self.mean_ = X.mean(axis=0) if self.standardize else 0.0
        self.std_ = X.std(axis=0) + 1e-8 if self.standardize else 1.0
        Xs = self._prep(X)
        Y = xp.asarray(np.searchsorted(self.classes_, y_host)[:, None] == np.arange(k)[None], dtype=Xs.dtype)
        if xp is np:
            from scipy.optimize import minimize  # noqa: PLC0415

            def fun(theta):
                W, b = theta[: k * d].reshape(k, d), theta[k * d:]
                loss, gW, gb = self._loss_grad(np, Xs, Y, W, b)
                return float(loss), np.concatenate([gW.ravel(), gb])

            res = minimize(fun, np.zeros(k * d + k), jac=True, method="L-BFGS-B",
                           options={"maxiter": self.max_iter})
            self.coef_, self.intercept_ = res.x[: k * d].reshape(k, d), res.x[k * d:]
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
        return self._prep(X.reshape(X.shape[0], -1)) @ self.coef_.T + self.intercept_

    def predict(self, X):
        idx = to_numpy(self.decision_function(X).argmax(axis=1))
        return self.classes_[idx]

    def score(self, X, y):
        """Top-1 accuracy."""
        return float(np.mean(self.predict(X) == to_numpy(y)))
