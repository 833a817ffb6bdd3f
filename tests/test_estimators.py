"""scikit-learn-compatible estimators (sparsecoding.estimators).

scikit-learn's own ``check_estimator`` runs on each estimator (skipped, with the reason, where
scikit-learn is not installed); pipelines and a grid search run on the bundled digits; the codes
are checked against the LASSO optimality (KKT) conditions, an independent reference, and against
the solver called directly.
"""
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from sparsecoding import ConvLCADictionaryLearning, LCADictionaryLearning, LCASparseCoder
from sparsecoding.estimators import NotFittedError

sklearn = pytest.importorskip("sklearn", reason="scikit-learn (the optional extra 'sklearn') is not installed")

from sklearn.base import clone  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.utils import estimator_checks as ec  # noqa: E402


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # small GEMMs on a shared 2-core machine: a second BLAS thread only waits for the first
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _quiet(fn, *args):
    with warnings.catch_warnings():
        # the estimators do not inherit sklearn.base.BaseEstimator (scikit-learn is optional); they
        # implement its API themselves, which is what the checks test
        warnings.filterwarnings("ignore", message=".*does not inherit from `sklearn.base.BaseEstimator`")
        warnings.simplefilter("ignore", ec.SkipTestWarning)
        return fn(*args)


def _digits(n_train=700, n_test=500):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    perm = np.random.default_rng(0).permutation(len(X))
    tr, te = perm[:n_train], perm[n_train:n_train + n_test]
    return X[tr], y[tr], X[te], y[te]


def _exemplars(X, k, seed=0):
    """A dictionary of ``k`` training samples scaled to unit norm."""
    D = X[np.random.default_rng(seed).choice(len(X), k, replace=False)]
    return D / np.linalg.norm(D, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- KKT reference
def _kkt_violation(D, X, A, lam, nonneg):
    """Largest violation of the LASSO optimality conditions of codes ``A`` (rows) for ``X`` on ``D``.

    With ``c = D (x - D^T a)``: ``c_i = lambda sign(a_i)`` on the support and ``|c_i| <= lambda``
    off it (non-negative codes: ``c_i = lambda`` on the support, ``c_i <= lambda`` off it).
    """
    C = (X - A @ D) @ D.T
    on = A != 0
    if nonneg:
        assert (A >= 0).all()
        return max(np.abs(C[on] - lam).max(initial=0), (C[~on] - lam).max(initial=0))
    return max(np.abs(C[on] - lam * np.sign(A[on])).max(initial=0), (np.abs(C[~on]) - lam).max(initial=0))


@pytest.mark.parametrize("solver", ["fista", "lca"])
@pytest.mark.parametrize("nonneg", [False, True])
def test_transform_satisfies_kkt(solver, nonneg):
    rng = np.random.default_rng(1)
    D = rng.standard_normal((12, 8))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = rng.standard_normal((15, 8))
    lam = 0.3
    coder = LCASparseCoder(D, lambda_=lam, solver=solver, nonneg=nonneg, transform_max_iter=20000,
                           transform_tol=1e-12).fit(X)
    A = coder.transform(X)
    assert A.shape == (15, 12) and A.dtype == np.float64
    assert 0 < (A != 0).mean() < 1
    assert _kkt_violation(D, X, A, lam, nonneg) < 1e-5
    # a code off the optimum violates the conditions: the check is not vacuous
    assert _kkt_violation(D, X, A * 1.05, lam, nonneg) > 1e-3


def test_transform_equals_the_solver_called_directly():
    from sparsecoding.ops.linop import DenseOperator
    from sparsecoding.solvers import fista

    rng = np.random.default_rng(2)
    D = rng.standard_normal((10, 6))
    X = rng.standard_normal((9, 6))
    coder = LCASparseCoder(D, lambda_=0.2, transform_max_iter=300, transform_tol=1e-8)
    ref = fista(DenseOperator(D), X, 0.2, max_iter=300, tol=1e-8).codes
    np.testing.assert_allclose(coder.transform(X), ref, rtol=1e-10, atol=1e-12)
    # the dictionary is used as given (not renormalised): the codes solve the problem on D itself
    assert _kkt_violation(D, X, coder.transform(X), 0.2, False) < 1e-5


def test_dictionary_learning_codes_and_atoms():
    X, _, _, _ = _digits(400, 10)
    dl = LCADictionaryLearning(32, lambda_=0.2, max_iter=3, batch_size=100, random_state=0, transform_tol=1e-9,
                               transform_max_iter=5000).fit(X)
    D = dl.components_
    assert D.shape == (32, 64) and dl.n_features_in_ == 64 and dl.n_iter_ == 3 and dl.n_steps_ == 12
    np.testing.assert_allclose(np.linalg.norm(D, axis=1), 1, atol=1e-6)
    energy = [r["energy"] for r in dl.history_]
    assert energy[-1] < energy[0]  # learning lowers the energy
    A = dl.transform(X[:50])
    assert _kkt_violation(D, X[:50], A, 0.2, False) < 1e-5
    np.testing.assert_allclose(dl.inverse_transform(A), A @ D)
    # partial_fit: one step per call on one mini-batch; it keeps the atoms unit-norm
    before = D.copy()
    dl.partial_fit(X[:100])
    assert dl.n_steps_ == 13 and not np.array_equal(dl.components_, before)
    np.testing.assert_allclose(np.linalg.norm(dl.components_, axis=1), 1, atol=1e-6)
    fresh = LCADictionaryLearning(16, lambda_=0.2, random_state=0, transform_max_iter=200)
    for _ in range(3):
        fresh.partial_fit(X[:100])
    assert fresh.components_.shape == (16, 64) and fresh.n_steps_ == 3 and fresh.n_iter_ == 0


def test_conv_transform_satisfies_kkt():
    from sparsecoding.ops.conv import conv, conv_transpose

    rng = np.random.default_rng(3)
    X = rng.standard_normal((4, 2, 9, 9))
    est = ConvLCADictionaryLearning(5, 3, stride=1, lambda_=0.3, max_iter=1, batch_size=4, random_state=0,
                                    transform_tol=1e-12, transform_max_iter=20000).fit(X)
    D = est.components_
    assert D.shape == (5, 2, 3, 3) and est.n_features_in_ == 2
    A = est.transform(X)
    assert A.shape == (4, 5, 9, 9)
    R = X - conv_transpose(A, D, 1, 1)
    np.testing.assert_allclose(est.inverse_transform(A), X - R, atol=1e-12)
    C = conv(R, D, 1, 1)
    on = A != 0
    assert 0 < on.mean() < 1
    assert np.abs(C[on] - 0.3 * np.sign(A[on])).max() < 1e-5
    assert np.abs(C[~on]).max() < 0.3 + 1e-5


# ----------------------------------------------------------------------------- scikit-learn's checks
_NEW_CHECKS = pytest.mark.skipif(not hasattr(ec, "estimator_checks_generator"),
                                 reason="scikit-learn >= 1.6 (estimator_checks_generator, tags) needed for its checks")


def _check_name(check):
    return getattr(check, "func", check).__name__


def _run_checks(make, overrides=()):
    """Every check of scikit-learn's ``check_estimator`` (its generator, legacy checks included) on the
    instance ``make(check_name)``; returns the names of the checks that ran."""
    ran = []
    for _, check in _quiet(lambda: list(ec.estimator_checks_generator(make(None), legacy=True))):
        name = _check_name(check)
        try:
            _quiet(check, make(name))
        except ec.SkipTest:
            continue
        ran.append(name)
    assert len(ran) > 30
    return ran


# the width of the data each check fits on: the same per-check dictionaries scikit-learn gives its own
# SparseCoder (sklearn/utils/_test_common/instance_generator.py), whose dictionary fixes n_features as ours
_WIDTH = {"check_estimators_dtypes": 5, "check_dtype_object": 10, "check_transformers_unfitted_stateless": 5,
          "check_fit_idempotent": 2, "check_estimators_overwrite_params": 2, "check_estimators_fit_returns_self": 2,
          "check_readonly_memmap_input": 2, "check_n_features_in_after_fitting": 4, "check_fit_check_is_fitted": 2,
          "check_n_features_in": 2, "check_positive_only_tag_during_fit": 4, "check_fit2d_1sample": 10,
          "check_fit2d_1feature": 1, "check_dataframe_column_names_consistency": 8, "check_array_api_input": 10,
          "check_set_output_transform": 5}
# with a tolerance the stopping test is on the batch (module notes of sparsecoding.estimators): the
# row-by-row invariance checks run the fixed iteration count, which makes every row independent
_EXACT = ("check_methods_subset_invariance", "check_methods_sample_order_invariance")


@_NEW_CHECKS
def test_check_estimator_sparse_coder():
    rng = np.random.default_rng(0)

    def make(check):
        dtype = np.float32 if check == "check_transformer_preserve_dtypes" else np.float64
        D = rng.standard_normal((5, _WIDTH.get(check, 3))).astype(dtype)
        return LCASparseCoder(D, transform_max_iter=200, transform_tol=None if check in _EXACT else 1e-4)

    ran = _run_checks(make)
    assert {"check_transformer_general", "check_estimators_pickle", "check_methods_subset_invariance",
            "check_transformers_unfitted_stateless"} <= set(ran)


@_NEW_CHECKS
def test_check_estimator_dictionary_learning():
    est = LCADictionaryLearning(max_iter=2, batch_size=32, transform_max_iter=100, random_state=0)
    _quiet(ec.check_estimator, est)  # raises on the first failing check


@_NEW_CHECKS
def test_check_estimator_conv_flattened_images():
    # with image_shape the estimator takes flattened images (N, C*H*W), and every check runs: the
    # images are one row of n_features pixels (the checks' data fix the width, as for the coder). The
    # checks run about 150 fits and transforms: 1x1 atoms keep them cheap (the convolutional geometry
    # is checked by the KKT test above and the digits pipeline below)
    def make(check):
        width = _WIDTH.get(check, 3)
        return ConvLCADictionaryLearning(2, 1, image_shape=(1, 1, width), max_iter=1, batch_size=32,
                                         transform_max_iter=30, random_state=0,
                                         transform_tol=None if check in _EXACT else 1e-4)

    ran = _run_checks(make)
    assert {"check_transformer_general", "check_estimators_pickle", "check_fit_idempotent"} <= set(ran)


@_NEW_CHECKS
def test_conv_checks_that_apply_to_images():
    # 4-D images: scikit-learn's checks feed 2-D data, so check_estimator skips an estimator whose
    # tags say it does not take 2-D arrays. The checks that use no data run as they are; their 4-D
    # counterparts (fit returns self, idempotent, pickling, unfitted error, dtypes, n_features_in_,
    # sample order and subset invariance) run below on images
    est = ConvLCADictionaryLearning(3, 3, max_iter=1, batch_size=8, random_state=0, transform_tol=None,
                                    transform_max_iter=100)
    name = type(est).__name__
    for check in (ec.check_estimator_cloneable, ec.check_estimator_tags_renamed, ec.check_valid_tag_types,
                  ec.check_estimator_repr, ec.check_no_attributes_set_in_init,
                  ec.check_do_not_raise_errors_in_init_or_set_params, ec.check_mixin_order,
                  ec.check_parameters_default_constructible, ec.check_get_params_invariance, ec.check_set_params):
        _quiet(check, name, est)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 2, 7, 7))
    with pytest.raises(NotFittedError):
        est.transform(X)
    fitted = clone(est)
    assert fitted.fit(X) is fitted and fitted.n_features_in_ == 2
    A = fitted.transform(X)
    again = clone(est).fit(X)
    np.testing.assert_array_equal(again.components_, fitted.components_)  # idempotent for a fixed seed
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).transform(X), A)
    perm = rng.permutation(8)
    np.testing.assert_allclose(fitted.transform(X[perm]), A[perm], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([fitted.transform(X[i:i + 1]) for i in range(8)]), A, rtol=1e-10,
                               atol=1e-12)
    assert fitted.transform(X.astype(np.float32)).dtype == np.float32
    f32 = clone(est).fit(X.astype(np.float32))
    assert f32.components_.dtype == np.float32 and f32.transform(X.astype(np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match="channels|shape"):
        fitted.transform(rng.standard_normal((2, 3, 7, 7)))
    with pytest.raises(ValueError, match="Expected"):
        fitted.transform(np.ones((2, 49)))  # flattened images need image_shape
    with pytest.raises(ValueError, match="NaN"):
        fitted.transform(np.full((1, 2, 7, 7), np.nan))
    vars_before = dict(vars(fitted))
    fitted.transform(X)
    assert vars(fitted).keys() == vars_before.keys()


# ----------------------------------------------------------------------------- digits
def test_pipeline_sparse_coder_logistic_regression_on_digits():
    Xtr, ytr, Xte, yte = _digits()
    pipe = make_pipeline(LCASparseCoder(_exemplars(Xtr, 100), lambda_=0.1, nonneg=True),
                         LogisticRegression(max_iter=1000))
    pipe.fit(Xtr, ytr)
    acc = pipe.score(Xte, yte)
    assert acc >= 0.93, acc  # measured 0.968; logistic regression on the pixels: about 0.96
    codes = pipe[0].transform(Xte)
    assert (codes != 0).mean() < 0.25  # sparse: a few exemplars per digit


def test_pipeline_dictionary_learning_logistic_regression_on_digits():
    Xtr, ytr, Xte, yte = _digits()
    pipe = make_pipeline(LCADictionaryLearning(48, lambda_=0.1, max_iter=2, batch_size=150, random_state=0),
                         LogisticRegression(max_iter=1000))
    pipe.fit(Xtr, ytr)
    acc = pipe.score(Xte, yte)
    assert acc >= 0.90, acc  # measured 0.94
    assert list(pipe[0].get_feature_names_out()[:2]) == ["lcadictionarylearning0", "lcadictionarylearning1"]


def test_grid_search_over_lambda():
    Xtr, ytr, _, _ = _digits(360, 10)
    pipe = make_pipeline(LCASparseCoder(_exemplars(Xtr, 60), transform_max_iter=300),
                         LogisticRegression(max_iter=300))
    search = GridSearchCV(pipe, {"lcasparsecoder__lambda_": [0.02, 0.2, 2.0]}, cv=2)
    search.fit(Xtr, ytr)
    assert search.best_params_["lcasparsecoder__lambda_"] in (0.02, 0.2)  # lambda = 2 codes (almost) nothing
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 3 and scores[2] < max(scores[:2])
    assert search.best_estimator_[0].lambda_ == search.best_params_["lcasparsecoder__lambda_"]
    assert search.predict(Xtr[:5]).shape == (5,)


def test_conv_pipeline_on_flattened_digits():
    Xtr, ytr, Xte, yte = _digits(400, 200)
    conv = ConvLCADictionaryLearning(8, 3, stride=2, image_shape=(1, 8, 8), lambda_=0.1, max_iter=1, batch_size=200,
                                     random_state=0, transform_max_iter=100)
    pipe = make_pipeline(conv, LogisticRegression(max_iter=300)).fit(Xtr, ytr)
    assert pipe[0].transform(Xte[:3]).shape == (3, 8 * 4 * 4)
    acc = pipe.score(Xte, yte)
    assert acc >= 0.85, acc  # measured 0.905 (8 atoms of 3x3, one pass)
    # the same estimator on the images themselves gives the code maps
    maps = pipe[0].transform(Xte[:3].reshape(3, 1, 8, 8))
    np.testing.assert_array_equal(maps.reshape(3, -1), pipe[0].transform(Xte[:3]))
    assert pipe[0].inverse_transform(pipe[0].transform(Xte[:3])).shape == (3, 64)


# ----------------------------------------------------------------------------- conventions, errors
def test_parameters_stored_unchanged_and_validated_at_fit():
    D = np.eye(3)
    coder = LCASparseCoder(D, lambda_=-1, solver="nope")  # stored as given, checked when used
    assert coder.get_params()["lambda_"] == -1 and coder.dictionary is D
    X = np.ones((2, 3))
    with pytest.raises(ValueError, match="lambda_"):
        coder.fit(X)
    with pytest.raises(ValueError, match="solver"):
        coder.set_params(lambda_=0.1).fit(X)
    with pytest.raises(ValueError, match="transform_max_iter"):
        LCASparseCoder(D, transform_max_iter=0).transform(X)
    with pytest.raises(TypeError, match="transform_tol"):
        LCASparseCoder(D, transform_tol="small").transform(X)
    with pytest.raises(ValueError, match="Invalid parameter 'alpha'"):
        coder.set_params(alpha=1)
    with pytest.raises(ValueError, match="X has 4 features, but LCASparseCoder is expecting 3"):
        LCASparseCoder(D).fit(X).transform(np.ones((2, 4)))
    with pytest.raises(ValueError, match="n_components"):
        LCADictionaryLearning(0).fit(X)
    with pytest.raises(ValueError, match="dict_init must have shape"):
        LCADictionaryLearning(2, dict_init=np.ones((3, 3))).fit(X)
    with pytest.raises(ValueError, match="odd kernel"):
        ConvLCADictionaryLearning(2, 4).fit(np.ones((2, 1, 6, 6)))
    with pytest.raises(ValueError, match="image_shape"):
        ConvLCADictionaryLearning(2, 3, image_shape=(1, 4, 4)).fit(np.ones((2, 15)))
    with pytest.raises(TypeError, match="[Ss]parse"):
        import scipy.sparse

        LCASparseCoder(D).fit(scipy.sparse.csr_matrix(X))
    with pytest.raises(NotFittedError, match="not fitted"):
        LCADictionaryLearning().transform(X)
    with pytest.raises(sklearn.exceptions.NotFittedError):  # scikit-learn's class once it is loaded
        LCADictionaryLearning().inverse_transform(X)


def test_clone_repr_pickle_and_dtypes():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6))
    dl = LCADictionaryLearning(4, lambda_=0.2, max_iter=2, batch_size=20, random_state=3, transform_max_iter=200)
    assert repr(dl) == ("LCADictionaryLearning(n_components=4, lambda_=0.2, max_iter=2, batch_size=20, "
                        "transform_max_iter=200, random_state=3)")
    twin = clone(dl)
    assert twin.get_params() == dl.get_params() and not hasattr(twin, "components_")
    dl.fit(X)
    np.testing.assert_array_equal(twin.fit(X).components_, dl.components_)  # seeded: reproducible
    restored = pickle.loads(pickle.dumps(dl))
    np.testing.assert_array_equal(restored.transform(X), dl.transform(X))
    assert dl.transform(X.astype(np.float32)).dtype == np.float32
    f32 = clone(dl).fit(X.astype(np.float32))
    assert f32.components_.dtype == np.float32 and f32.dtype_ == np.float32
    assert dl.fit(X.astype(np.int64)).components_.dtype == np.float64  # integers code in float64
    assert LCADictionaryLearning(dtype="float32").fit(X).transform(X).dtype == np.float32


def test_estimators_work_without_scikit_learn():
    # scikit-learn blocked: importing the package and using the estimators must not need it
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError("scikit-learn is blocked in this test")
sys.meta_path.insert(0, Block())
import numpy as np
import sparsecoding
from sparsecoding import LCADictionaryLearning, LCASparseCoder
X = np.random.default_rng(0).standard_normal((30, 5))
dl = LCADictionaryLearning(3, max_iter=1, batch_size=10, random_state=0, transform_max_iter=50).fit(X)
codes = dl.transform(X)
assert codes.shape == (30, 3)
twin = type(dl)(**dl.get_params()).set_params(lambda_=0.5)
assert twin.lambda_ == 0.5 and "lambda_=0.5" in repr(twin)
assert LCASparseCoder(dl.components_).fit(X).transform(X).shape == (30, 3)
try:
    LCADictionaryLearning().transform(X)
except sparsecoding.estimators.NotFittedError:
    pass
assert not any(m == "sklearn" or m.startswith("sklearn.") for m in sys.modules)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
