"""Bad input to the models (EqProp, LPL, Földiák, optimisers, readout): a clear exception naming the argument.

One table of (call, exception, message fragment) over every public entry point;
empty batches give the documented empty results; an exploding learning rate
raises FloatingPointError and leaves the model as it was.
"""
import math

import numpy as np
import pytest

from sparsecoding.data import bars
from sparsecoding.eqprop.network import ConvEBM, MLPEBM
from sparsecoding.eqprop.train import make_optimizer
from sparsecoding.optim import SGD, Adam
from sparsecoding.plasticity.foldiak import FoldiakNetwork
from sparsecoding.plasticity.lpl import ACTIVATIONS, lpl_delta, lpl_delta_conv, lpl_grad_z, lpl_losses, toy_selectivity
from sparsecoding.plasticity.lpl_net import LPLConvNet
from sparsecoding.readout import LogisticRegression, participation_ratio

# the overflow cases warn on the way to the error they test
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")

NAN, INF = math.nan, math.inf
R = np.random.default_rng(0)
XC = R.uniform(0, 1, (2, 2, 8, 8))  # ConvEBM input
XM = R.uniform(0, 1, (2, 6))  # MLPEBM input
Y = np.array([0, 2])
RELU = ACTIVATIONS["relu"]


def nan_at(a, index=0):
    a = np.array(a, dtype=float)
    a.reshape(-1)[index] = NAN
    return a


def conv():
    return ConvEBM(8, [2, 3], [3], [1], [1], "m", [4, 3], dtype="float64", seed=0)


def mlp():
    return MLPEBM([6, 5, 3], dtype="float64", seed=0)


def states(net, n=2):
    return [np.full((n, *s), 0.5) for s in net.state_shapes]


def lpl_net(**kw):
    return LPLConvNet(1, (3, 4), "mi", **kw, seed=0)


IMG = R.random((4, 1, 6, 6)).astype(np.float32)
Z, ZP = R.standard_normal((5, 3)), R.standard_normal((5, 3))
W, B, XL = R.standard_normal((3, 4)), R.standard_normal(3), R.standard_normal((5, 4))
WC, XCL = R.standard_normal((3, 2, 3, 3)), R.standard_normal((4, 2, 5, 5))


def fitted_readout():
    X = R.standard_normal((30, 4))
    return LogisticRegression(max_iter=20).fit(X, (X[:, 0] > 0).astype(int))


CASES = [
    # ---------------------------------------------------------------- EqProp: non-finite data
    ("phi x nan", lambda: conv().phi(nan_at(XC), states(conv())), ValueError, "x contains NaN"),
    ("phi states nan", lambda: conv().phi(XC, [nan_at(s) for s in states(conv())]), ValueError,
     r"states\[0\] contains"),
    ("phi states count", lambda: conv().phi(XC, states(conv())[:1]), ValueError, "states must hold 3 arrays"),
    ("phi beta nan", lambda: conv().phi(XC, states(conv()), Y, NAN), ValueError, "beta must be a finite number"),
    ("phi y missing", lambda: conv().phi(XC, states(conv()), None, 0.5), ValueError, "y is None"),
    ("state_grads x inf", lambda: conv().state_grads(nan_at(XC) * 0 + INF, states(conv())), ValueError, "x contains"),
    ("state_grads states shape", lambda: conv().state_grads(XC, states(conv(), 3)), ValueError,
     r"states\[0\] must have shape"),
    ("param_grads x nan", lambda: conv().param_grads(nan_at(XC, 5), states(conv())), ValueError, "x contains NaN"),
    ("param_grads states nan", lambda: conv().param_grads(XC, [nan_at(s) for s in states(conv())]), ValueError,
     r"states\[0\] contains"),
    ("param_grads empty", lambda: conv().param_grads(XC[:0], states(conv(), 0)), ValueError, "x is an empty batch"),
    ("relax x nan", lambda: conv().relax(nan_at(XC), states(conv()), 3), ValueError, "x contains NaN"),
    ("ep x nan", lambda: conv().ep_gradients(nan_at(XC), Y, 3, 2), ValueError, "x contains NaN"),
    ("ep empty", lambda: conv().ep_gradients(XC[:0], Y[:0], 3, 2), ValueError, "x is an empty batch"),
    ("predict x nan", lambda: conv().predict(nan_at(XC), 3), ValueError, "x contains NaN"),
    ("predict complex", lambda: conv().predict(XC + 1j, 3), TypeError, "x must be real"),
    ("predict x shape", lambda: conv().predict(XC[:, :1], 3), ValueError, r"x must have shape \(N, 2, 8, 8\)"),
    ("mlp predict nan", lambda: mlp().predict(nan_at(XM), 3), ValueError, "x contains NaN"),
    ("mlp features", lambda: mlp().predict(XM[:, :5], 3), ValueError, "x must have 6 features"),
    ("mlp phi nan", lambda: mlp().phi(nan_at(XM), states(mlp())), ValueError, "x contains NaN"),
    # ---------------------------------------------------------------- EqProp: labels
    ("ep y out of range", lambda: conv().ep_gradients(XC, [0, 3], 3, 2), ValueError, r"in \[0, 3\)"),
    ("ep y negative", lambda: mlp().ep_gradients(XM, [-1, 0], 3, 2), ValueError, r"in \[0, 3\)"),
    ("ep y fractional", lambda: conv().ep_gradients(XC, [0.5, 1.0], 3, 2), ValueError, "non-integral"),
    ("ep y bool", lambda: conv().ep_gradients(XC, np.array([True, False]), 3, 2), ValueError, "integer class labels"),
    ("ep y strings", lambda: conv().ep_gradients(XC, np.array(["a", "b"]), 3, 2), ValueError, "integer class labels"),
    ("ep y nan", lambda: conv().ep_gradients(XC, [0.0, NAN], 3, 2), ValueError, "y contains NaN"),
    ("ep y length", lambda: conv().ep_gradients(XC, [0], 3, 2), ValueError, "y has 1 labels but x has 2"),
    ("ep y 2-D", lambda: conv().ep_gradients(XC, [[0], [1]], 3, 2), ValueError, "1-D"),
    ("phi y out of range", lambda: conv().phi(XC, states(conv()), [0, 7], 0.5), ValueError, r"in \[0, 3\)"),
    ("state_grads y range", lambda: conv().state_grads(XC, states(conv()), [0, 3], 0.5), ValueError, r"\[0, 3\)"),
    ("loss_value y range", lambda: conv().loss_value(states(conv()), [3, 0]), ValueError, r"\[0, 3\)"),
    # ---------------------------------------------------------------- EqProp: settings
    ("ep betas nan", lambda: conv().ep_gradients(XC, Y, 3, 2, betas=(0.0, NAN)), ValueError, r"betas\[1\]"),
    ("ep betas inf", lambda: conv().ep_gradients(XC, Y, 3, 2, betas=(-INF, 0.5)), ValueError, r"betas\[0\]"),
    ("ep betas equal", lambda: conv().ep_gradients(XC, Y, 3, 2, betas=(0.5, 0.5)), ValueError, "betas must differ"),
    ("ep betas not pair", lambda: conv().ep_gradients(XC, Y, 3, 2, betas=0.5), ValueError, "betas must be a pair"),
    ("ep third phase zero", lambda: conv().ep_gradients(XC, Y, 3, 2, betas=(0.5, 0.0), third_phase=True),
     ValueError, "third_phase"),
    ("ep T1 zero", lambda: conv().ep_gradients(XC, Y, 0, 2), ValueError, "T1 must be an integer >= 1"),
    ("ep T2 float", lambda: conv().ep_gradients(XC, Y, 3, 1.5), ValueError, "T2 must be an integer"),
    ("ep schedule", lambda: conv().ep_gradients(XC, Y, 3, 2, schedule="fast"), ValueError, "schedule must be"),
    ("ep tol zero", lambda: conv().ep_gradients(XC, Y, 3, 2, tol=0), ValueError, "tol must be a finite number > 0"),
    ("predict T zero", lambda: conv().predict(XC, 0), ValueError, "T must be an integer >= 1"),
    ("predict T bool", lambda: conv().predict(XC, True), ValueError, "T must be an integer"),
    ("scale zero", lambda: ConvEBM(8, [2, 3], [3], [1], [1], "m", [3], scale=0), ValueError,
     "scale must be a finite number > 0"),
    ("scale nan", lambda: MLPEBM([6, 3], scale=NAN), ValueError, "scale must be"),
    ("activation name", lambda: MLPEBM([6, 3], activation="relu6"), ValueError, "activation must be one of"),
    ("activation type", lambda: MLPEBM([6, 3], activation=["tanh"]), ValueError, "activation must be one of"),
    ("loss name", lambda: MLPEBM([6, 3], loss="l1"), ValueError, "loss must be one of"),
    ("fc size", lambda: MLPEBM([6, 0]), ValueError, r"fc\[0\] must be an integer >= 1"),
    ("channels", lambda: ConvEBM(8, [2, 0], [3], [1], [1], "m", [3]), ValueError, r"channels\[1\]"),
    ("init_states", lambda: mlp().init_states(-1), ValueError, "batch must be an integer >= 0"),
    # ---------------------------------------------------------------- optimisers
    ("sgd lr negative", lambda: SGD([np.ones(2)], lr=-0.1), ValueError, "lr must be a finite number >= 0"),
    ("sgd lr nan", lambda: SGD([np.ones(2)], lr=NAN), ValueError, "lr must be"),
    ("sgd lr list inf", lambda: SGD([np.ones(2), np.ones(1)], lr=[0.1, INF]), ValueError, r"lr\[1\] must be"),
    ("sgd weight decay", lambda: SGD([np.ones(2)], lr=0.1, weight_decay=-1), ValueError, "weight_decay must be"),
    ("sgd momentum one", lambda: SGD([np.ones(2)], lr=0.1, momentum=1.0), ValueError, r"momentum must be .*\[0, 1\)"),
    ("sgd momentum nan", lambda: SGD([np.ones(2)], lr=0.1, momentum=NAN), ValueError, "momentum must be"),
    ("sgd names", lambda: SGD([np.ones(2)], lr=0.1, names=["a", "b"]), ValueError, "names needs one name"),
    ("adam beta1", lambda: Adam([np.ones(2)], betas=(1.0, 0.9)), ValueError, r"betas\[0\] must be .*\[0, 1\)"),
    ("adam beta2", lambda: Adam([np.ones(2)], betas=(0.9, -0.1)), ValueError, r"betas\[1\] must be"),
    ("adam betas pair", lambda: Adam([np.ones(2)], betas=0.9), ValueError, "betas must be a pair"),
    ("adam eps zero", lambda: Adam([np.ones(2)], eps=0), ValueError, "eps must be a finite number > 0"),
    ("adam eps nan", lambda: Adam([np.ones(2)], eps=NAN), ValueError, "eps must be"),
    ("lr scale nan", lambda: SGD([np.ones(2)], lr=0.1).set_lr_scale(NAN), ValueError, "scale must be"),
    ("sgd nan gradient", lambda: SGD([np.ones(2)], lr=0.1).step([np.array([1.0, NAN])]), FloatingPointError,
     "gradient of parameter 0"),
    ("adam nan gradient", lambda: Adam([np.ones(2)], names=["w"]).step([np.array([INF, 1.0])]), FloatingPointError,
     r"parameter 0 \(w\)"),
    ("sgd huge lr", lambda: SGD([np.ones(2, np.float32)], lr=1e39).step([np.ones(2, np.float32)]),
     FloatingPointError, "became non-finite after the SGD step 1 with lr=1e"),
    # ---------------------------------------------------------------- readout
    ("readout l2", lambda: LogisticRegression(l2=-1), ValueError, "l2 must be"),
    ("readout max_iter", lambda: LogisticRegression(max_iter=0), ValueError, "max_iter must be an integer >= 1"),
    ("readout fit X nan", lambda: LogisticRegression().fit(nan_at(np.ones((4, 2))), [0, 1, 0, 1]), ValueError,
     "X contains NaN"),
    ("readout fit y fractional", lambda: LogisticRegression().fit(np.ones((2, 2)), [0.5, 1]), ValueError,
     "non-integral"),
    ("readout fit y bool", lambda: LogisticRegression().fit(np.ones((2, 2)), np.array([True, False])), ValueError,
     "integer class labels"),
    ("readout fit y length", lambda: LogisticRegression().fit(np.ones((3, 2)), [0, 1]), ValueError, "labels"),
    ("readout fit empty", lambda: LogisticRegression().fit(np.ones((0, 2)), []), ValueError, "X is empty"),
    ("readout fit X 1-D", lambda: LogisticRegression().fit(np.ones(3), [0, 1, 0]), ValueError, "X must have shape"),
    ("readout not fitted", lambda: LogisticRegression().predict(np.ones((2, 2))), ValueError, "not fitted"),
    ("readout predict nan", lambda: fitted_readout().predict(nan_at(np.ones((2, 4)))), ValueError, "X contains NaN"),
    ("readout predict features", lambda: fitted_readout().predict(np.ones((2, 3))), ValueError, "features"),
    ("readout score y", lambda: fitted_readout().score(np.ones((2, 4)), [0.5, 1]), ValueError, "non-integral"),
    ("readout score empty", lambda: fitted_readout().score(np.ones((0, 4)), []), ValueError, "X is empty"),
    ("participation nan", lambda: participation_ratio(nan_at(np.ones((3, 2)))), ValueError, "F contains NaN"),
    ("participation empty", lambda: participation_ratio(np.ones((0, 2))), ValueError, "non-empty"),
    # ---------------------------------------------------------------- LPL functions
    ("losses z nan", lambda: lpl_losses(nan_at(Z), ZP), ValueError, "z contains NaN"),
    ("losses z_prev inf", lambda: lpl_losses(Z, nan_at(ZP) * 0 + INF), ValueError, "z_prev contains"),
    ("losses shapes", lambda: lpl_losses(Z, ZP[:, :2]), ValueError, "z and z_prev must both have shape"),
    ("losses eps", lambda: lpl_losses(Z, ZP, eps=0), ValueError, "eps must be a finite number > 0"),
    ("losses batch", lambda: lpl_losses(Z[:1], ZP[:1]), ValueError, "at least 2"),
    ("grad_z lambda1", lambda: lpl_grad_z(Z, ZP, lambda1=-1), ValueError, "lambda1 must be a finite number >= 0"),
    ("grad_z lambda2", lambda: lpl_grad_z(Z, ZP, lambda2=NAN), ValueError, "lambda2 must be"),
    ("grad_z terms", lambda: lpl_grad_z(Z, ZP, terms=("pred", "hebbian")), ValueError, "terms must be"),
    ("delta x nan", lambda: lpl_delta(W, B, nan_at(XL), ZP, *RELU), ValueError, "x contains NaN"),
    ("delta W nan", lambda: lpl_delta(nan_at(W), B, XL, ZP, *RELU), ValueError, "W contains NaN"),
    ("delta b inf", lambda: lpl_delta(W, nan_at(B) * 0 + INF, XL, ZP, *RELU), ValueError, "b contains"),
    ("delta z_prev nan", lambda: lpl_delta(W, B, XL, nan_at(ZP), *RELU), ValueError, "z_prev contains NaN"),
    ("delta z_prev shape", lambda: lpl_delta(W, B, XL, ZP[:4], *RELU), ValueError, "z_prev must have shape"),
    ("delta batch", lambda: lpl_delta(W, B, XL[:1], ZP[:1], *RELU), ValueError, "at least 2"),
    ("delta weight decay", lambda: lpl_delta(W, B, XL, ZP, *RELU, weight_decay=-1), ValueError, "weight_decay"),
    ("delta eps", lambda: lpl_delta(W, B, XL, ZP, *RELU, eps=-1e-4), ValueError, "eps must be"),
    ("delta overflow", lambda: lpl_delta(W * 1e300, B, XL, ZP, *ACTIVATIONS["linear"]), FloatingPointError,
     "non-finite"),
    ("conv delta x nan", lambda: lpl_delta_conv(WC, None, nan_at(XCL), ZP[:4], *RELU), ValueError, "x contains NaN"),
    ("conv delta mode", lambda: lpl_delta_conv(WC, None, XCL, ZP[:4], *RELU, mode="bogus"), ValueError, "mode"),
    ("conv delta z_prev", lambda: lpl_delta_conv(WC, None, XCL, ZP, *RELU, mode="pool"), ValueError,
     "z_prev must have shape"),
    ("conv delta lambda2", lambda: lpl_delta_conv(WC, None, XCL, ZP[:4], *RELU, lambda2=-1), ValueError, "lambda2"),
    ("toy variant", lambda: toy_selectivity(1.0, "bogus"), ValueError, "variant must be one of"),
    ("toy lr", lambda: toy_selectivity(1.0, lr=NAN), ValueError, "lr must be"),
    ("toy batch", lambda: toy_selectivity(1.0, batch=1), ValueError, "batch must be an integer >= 2"),
    # ---------------------------------------------------------------- LPLConvNet
    ("lpl optimizer", lambda: lpl_net(optimizer="rmsprop"), ValueError, r"optimizer must be one of \('adam', 'sgd'\)"),
    ("lpl lambda1", lambda: lpl_net(lambda1=-1), ValueError, "lambda1 must be"),
    ("lpl lambda2", lambda: lpl_net(lambda2=INF), ValueError, "lambda2 must be"),
    ("lpl eps", lambda: lpl_net(eps=0), ValueError, "eps must be a finite number > 0"),
    ("lpl lr", lambda: lpl_net(lr=-1), ValueError, "lr must be a finite number >= 0"),
    ("lpl weight decay", lambda: lpl_net(weight_decay=NAN), ValueError, "weight_decay must be"),
    ("lpl kernel even", lambda: lpl_net(kernel_size=2), ValueError, "kernel_size must be odd"),
    ("lpl channels", lambda: LPLConvNet(1, (0,), "m"), ValueError, r"channels\[0\]"),
    ("lpl activation", lambda: lpl_net(activation="gelu"), ValueError, "activation must be one of"),
    ("lpl activation eqprop name", lambda: lpl_net(activation="my_hard_sig"), ValueError,
     r"activation must be one of \['linear', 'relu', 'sigmoid', 'tanh'\]"),
    ("lpl activation type", lambda: lpl_net(activation=["relu"]), ValueError, "activation must be one of"),
    ("lpl mode", lambda: lpl_net(mode="bogus"), ValueError, "mode must be"),
    ("lpl forward nan", lambda: lpl_net().forward(nan_at(IMG)), ValueError, "x contains NaN"),
    ("lpl forward channels", lambda: lpl_net().forward(np.ones((2, 3, 6, 6))), ValueError, "x has 3 channels"),
    ("lpl forward rank", lambda: lpl_net().forward(np.ones((2, 6, 6))), ValueError, r"\(N, C, H, W\)"),
    ("lpl features nan", lambda: lpl_net().features(nan_at(IMG)), ValueError, "x contains NaN"),
    ("lpl features grid", lambda: lpl_net().features(IMG, grid=0), ValueError, "grid must be"),
    ("lpl features batch", lambda: lpl_net().features(IMG, batch_size=0), ValueError, "batch_size must be"),
    ("lpl layer_forward layer", lambda: lpl_net().layer_forward(2, IMG), ValueError, r"layer must be in \[0, 2\)"),
    ("lpl layer_forward h", lambda: lpl_net().layer_forward(0, nan_at(IMG)), ValueError, "h contains NaN"),
    ("lpl train x1 nan", lambda: lpl_net().train_step(nan_at(IMG), IMG), ValueError, "x1 contains NaN"),
    ("lpl train x2 inf", lambda: lpl_net().train_step(IMG, nan_at(IMG) * 0 + INF), ValueError, "x2 contains"),
    ("lpl train shapes", lambda: lpl_net().train_step(IMG, IMG[:3]), ValueError, "same shape"),
    ("lpl train one image", lambda: lpl_net().train_step(IMG[:1], IMG[:1]), ValueError, "at least 2 images"),
    ("lpl train empty", lambda: lpl_net().train_step(IMG[:0], IMG[:0]), ValueError, "at least 2 images"),
    ("lpl train layers", lambda: lpl_net().train_step(IMG, IMG, layers=[5]), ValueError, "layers"),
    ("lpl train layers dup", lambda: lpl_net().train_step(IMG, IMG, layers=[0, 0]), ValueError, "distinct"),
    # ---------------------------------------------------------------- Földiák
    ("foldiak p zero", lambda: FoldiakNetwork(4, 2, p=0), ValueError, r"p must be a finite number in \(0, 1\)"),
    ("foldiak p one", lambda: FoldiakNetwork(4, 2, p=1), ValueError, "p must be"),
    ("foldiak p nan", lambda: FoldiakNetwork(4, 2, p=NAN), ValueError, "p must be"),
    ("foldiak alpha", lambda: FoldiakNetwork(4, 2, alpha=-0.1), ValueError, "alpha must be a finite number >= 0"),
    ("foldiak beta", lambda: FoldiakNetwork(4, 2, beta=INF), ValueError, "beta must be"),
    ("foldiak gamma", lambda: FoldiakNetwork(4, 2, gamma=NAN), ValueError, "gamma must be"),
    ("foldiak lam", lambda: FoldiakNetwork(4, 2, lam=0), ValueError, "lam must be a finite number > 0"),
    ("foldiak dt", lambda: FoldiakNetwork(4, 2, dt=0), ValueError, r"dt must be .*\(0, 1\]"),
    ("foldiak tol", lambda: FoldiakNetwork(4, 2, tol=-1), ValueError, "tol must be"),
    ("foldiak max_settle", lambda: FoldiakNetwork(4, 2, max_settle=0), ValueError, "max_settle must be"),
    ("foldiak check_every", lambda: FoldiakNetwork(4, 2, check_every=0), ValueError,
     "check_every must be an integer >= 1"),
    ("foldiak check_every float", lambda: FoldiakNetwork(4, 2, check_every=2.0), ValueError, "check_every must be"),
    ("foldiak tol nan", lambda: FoldiakNetwork(4, 2, tol=NAN), ValueError, "tol must be"),
    ("foldiak n_units", lambda: FoldiakNetwork(4, 0), ValueError, "n_units must be an integer >= 1"),
    ("foldiak settle nan", lambda: FoldiakNetwork(4, 2).settle(nan_at(np.ones((2, 4)))), ValueError,
     "X contains NaN"),
    ("foldiak transform inf", lambda: FoldiakNetwork(4, 2).transform(np.full((1, 4), INF)), ValueError, "X contains"),
    ("foldiak partial_fit nan", lambda: FoldiakNetwork(4, 2).partial_fit(nan_at(np.ones((2, 4)))), ValueError,
     "X contains NaN"),
    ("foldiak shape", lambda: FoldiakNetwork(4, 2).transform(np.ones((2, 5))), ValueError, r"shape \(n_samples, 4\)"),
    ("foldiak complex", lambda: FoldiakNetwork(4, 2).settle(np.ones((2, 4)) * 1j), TypeError, "X must be real"),
    ("foldiak batch_size", lambda: FoldiakNetwork(4, 2).partial_fit(np.ones((2, 4)), batch_size=0), ValueError,
     "batch_size must be an integer >= 1"),
    ("foldiak huge weights", lambda: _huge_foldiak().settle(np.ones((2, 4))), FloatingPointError,
     "settling diverged.*lower the learning rates"),
]


def _huge_foldiak():
    net = FoldiakNetwork(4, 3, seed=0)
    net.Q[...] = 1e308  # the drive overflows to +inf ...
    net.W[...] = -1e308  # ... and, once units are active, the inhibition to -inf: inf - inf = NaN
    net.W[np.arange(3), np.arange(3)] = 0
    return net


@pytest.mark.parametrize("call, exc, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_naming_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# -------------------------------------------------------------------- empty batches
def test_empty_batches_give_empty_results():
    for net, x in ((conv(), XC[:0]), (mlp(), XM[:0])):
        assert net.phi(x, states(net, 0)).shape == (0,)
        grads = net.state_grads(x, states(net, 0))
        assert [g.shape for g in grads] == [(0, *s) for s in net.state_shapes]
        relaxed = net.relax(x, states(net, 0), 3).state
        assert [s.shape for s in relaxed] == [(0, *s) for s in net.state_shapes]
        pred = net.predict(x, 3)
        assert pred.shape == (0,) and np.issubdtype(pred.dtype, np.integer)
        assert net.predict(x, 10, tol=1e-3).shape == (0,)
    f = FoldiakNetwork(4, 3, seed=0)
    assert f.settle(np.ones((0, 4))).state.shape == (0, 3) and f.transform(np.ones((0, 4))).shape == (0, 3)
    Q, t = f.Q.copy(), f.t.copy()
    assert f.partial_fit(np.ones((0, 4))) is f and f.n_presented == 0
    np.testing.assert_array_equal(f.Q, Q)
    np.testing.assert_array_equal(f.t, t)
    lnet = lpl_net()
    assert [z.shape for z in lnet.forward(IMG[:0])] == [(0, 3, 6, 6), (0, 4, 3, 3)]
    assert [a.shape for a in lnet.features(IMG[:0])] == [(0, 12), (0, 16)]
    assert fitted_readout().predict(np.ones((0, 4))).shape == (0,)


def test_integral_float_labels_are_accepted_and_same_as_integers():
    net = conv()
    g_int = net.ep_gradients(XC, Y, 4, 2)
    g_float = net.ep_gradients(XC, Y.astype(float), 4, 2)
    for (a, b), (c, d) in zip(g_int, g_float):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_an_input_changed_in_place_is_checked_again():
    for net, x in ((conv(), XC.copy()), (mlp(), XM.copy())):
        net.predict(x, 2)
        x[0, 0] = NAN
        with pytest.raises(ValueError, match="x contains NaN"):
            net.predict(x, 2)


# -------------------------------------------------------------------- exploding learning rates
def _copies(arrays):
    return [np.array(a, copy=True) for a in arrays]


def test_exploding_learning_rate_eqprop_raises_and_keeps_the_weights():
    net = MLPEBM([6, 5, 3], seed=0)  # float32
    opt = make_optimizer(net, "sgd", lrs=1e39, mmt=0.9)
    flat = [p for pair in net.params for p in pair]
    before = _copies(flat)
    with pytest.raises(FloatingPointError, match=r"non-finite after the SGD step 1 with lr=1e\+39"):
        for _ in range(3):
            opt.step([g for pair in net.ep_gradients(XM, Y, 5, 3) for g in pair])
    for a, b in zip(flat, before):
        np.testing.assert_array_equal(a, b)
    assert opt.t == 0 and all(not v.any() for v in opt.velocity)


def test_exploding_learning_rate_adam_buffers_untouched():
    p = np.ones(3, np.float32)
    opt = Adam([p], lr=0.1)
    opt.step([np.ones(3, np.float32)])
    m, v, p0 = opt.m[0].copy(), opt.v[0].copy(), p.copy()
    with pytest.raises(FloatingPointError, match="Adam step 2"):
        opt.step([np.full(3, 1e30, np.float32)])  # g * g overflows the second moment
    np.testing.assert_array_equal(opt.m[0], m)
    np.testing.assert_array_equal(opt.v[0], v)
    np.testing.assert_array_equal(p, p0)
    assert opt.t == 1


def test_exploding_learning_rate_lpl_raises_instead_of_huge_weights():
    net = LPLConvNet(1, (4,), "i", activation="linear", lr=1e4, optimizer="sgd", seed=1)
    x1 = IMG + 0.01 * R.random(IMG.shape).astype(np.float32)
    last = None
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        for _ in range(50):
            last = _copies(p for pair in net.params for p in pair)
            net.train_step(x1, IMG)
    # the failing step wrote nothing: the weights are those before it, all finite
    for a, b in zip((p for pair in net.params for p in pair), last):
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        toy_selectivity(2.0, "lpl", lr=10.0, steps=200)


def test_exploding_learning_rate_foldiak_raises_and_keeps_the_state():
    X, _ = bars(64, seed=0)
    net = FoldiakNetwork(64, 16, alpha=1e300, beta=1e300, gamma=1e300, seed=1)
    with pytest.raises(FloatingPointError, match="lower beta"):
        for i in range(0, 64, 8):
            state = _copies((net.Q, net.W, net.t))
            presented = net.n_presented
            net.partial_fit(X[i:i + 8], batch_size=8)
    for a, b in zip((net.Q, net.W, net.t), state):
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()
    assert net.n_presented == presented


def test_eqprop_relax_empty_batch_with_tol_and_bad_T():
    from sparsecoding.eqprop.network import ConvEBM

    net = ConvEBM(8, [1, 2], [3], [1], [1], "m", [3], seed=0)
    out = net.relax(np.zeros((0, 1, 8, 8)), net.init_states(0), 10, tol=1e-3).state
    assert [tuple(s.shape) for s in out] == [(0, *s) for s in net.state_shapes]
    with pytest.raises(ValueError, match="T"):
        net.relax(np.zeros((2, 1, 8, 8)), net.init_states(2), 0)
