"""Layer-local LPL network: locality, greedy stages and exact resume."""
import numpy as np


def test_lpl_network_trains_layer_locally_and_resumes_exactly(tmp_path):
    from sparsecoding.data.augment import digit_views
    from sparsecoding.plasticity.lpl_net import LPLConvNet

    X = np.random.default_rng(0).random((64, 1, 8, 8)).astype(np.float32)

    def make():
        return LPLConvNet(1, (4, 6), "mi", lr=1e-2, seed=1)

    full = make()
    h_full = full.fit(X, epochs=3, batch_size=16, augment=digit_views, progress=False)
    part = make()
    part.fit(X, epochs=2, batch_size=16, augment=digit_views, progress=False, checkpoint=tmp_path / "ck.npz")
    resumed = make()
    h_res = resumed.fit(X, epochs=3, batch_size=16, augment=digit_views, progress=False, checkpoint=tmp_path / "ck.npz")
    for (W1, b1), (W2, b2) in zip(full.params, resumed.params):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    assert len(h_res) == len(h_full)
    # greedy: training layer 0 alone leaves layer 1 untouched
    g = make()
    W1_before = g.params[1][0].copy()
    g.train_step(digit_views(X[:16], np.random.default_rng(1)), digit_views(X[:16], np.random.default_rng(2)), layers=[0])
    np.testing.assert_array_equal(g.params[1][0], W1_before)


def test_greedy_fit_resumes_bit_exactly_after_an_exception_mid_stage(tmp_path):
    """Greedy stages on the learning loop: a run stopped by an exception from a callback, resumed by a
    fresh network from its last checkpoint, ends bit-identical (weights, Adam buffers, history)."""
    import pytest

    from sparsecoding.data.augment import digit_views
    from sparsecoding.plasticity.lpl_net import LPLConvNet
    from sparsecoding.training import SettingsChanged

    X = np.random.default_rng(0).random((48, 1, 8, 8)).astype(np.float32)
    kw = dict(epochs=2, batch_size=8, seed=3, augment=digit_views, greedy=True, progress=False)

    def make():
        return LPLConvNet(1, (4, 6), "mi", lr=1e-2, seed=1)

    full = make()
    h_full = full.fit(X, **kw)  # 2 layers x 2 epochs x 6 batches
    assert [r["stage"] for r in h_full] == [1, 1, 2, 2]
    assert "pred1" in h_full[0] and "pred2" not in h_full[0] and "pred2" in h_full[2] and "pred1" not in h_full[2]

    class Stop(Exception):
        pass

    def stop_at_17(step, report):
        if step == 17:  # stage 2 (layer 2), epoch 3, batch 5; the last checkpoint is at step 16
            raise Stop

    ck = tmp_path / "ck.npz"
    with pytest.raises(Stop):
        make().fit(X, checkpoint=ck, checkpoint_every=4, callback=stop_at_17, **kw)
    resumed = make()
    h_res = resumed.fit(X, checkpoint=ck, checkpoint_every=4, **kw)
    a_full, m_full = full.get_state()
    a_res, m_res = resumed.get_state()
    assert sorted(a_full) == sorted(a_res) and m_full == m_res
    for k in a_full:
        np.testing.assert_array_equal(a_full[k], a_res[k], err_msg=k)
    assert list(h_res) == list(h_full)
    # greedy: epochs is the stage length, so it is one of the checkpoint's settings
    with pytest.raises(SettingsChanged, match="epochs_per_layer"):
        make().fit(X, checkpoint=ck, **{**kw, "epochs": 3})


def test_fit_stopped_by_max_steps_and_resumed_ends_bit_identical(tmp_path):
    """The learning API: ``fit(X, epochs=, batch_size=, seed=, callbacks=, checkpoint=)`` returns a History;
    all layers at once, stopped by ``max_steps`` inside an epoch and resumed from the checkpoint by a fresh
    network: weights, Adam buffers and step count, epoch and per-batch records all bit-identical."""
    from sparsecoding.data.augment import digit_views
    from sparsecoding.plasticity.lpl_net import LPLConvNet
    from sparsecoding.training import History

    X = np.random.default_rng(4).random((40, 1, 8, 8)).astype(np.float32)
    seen = []
    kw = dict(epochs=2, batch_size=8, seed=11, callbacks=[seen.append], augment=digit_views, progress=False,
              record_steps=True)

    def make(seed=2):
        return LPLConvNet(1, (4, 6), "mi", lr=1e-2, seed=seed)

    full = make()
    h_full = full.fit(X, **kw)
    assert isinstance(h_full, History) and len(h_full) == 2 and len(h_full.steps) == 10 and seen == list(h_full)
    ck = tmp_path / "ck.npz"
    h_part = make().fit(X, checkpoint=ck, max_steps=7, **kw)  # epoch 2, batch 2
    assert len(h_part) == 1 and len(h_part.steps) == 7
    resumed = make(seed=99)  # other initial weights: only the checkpoint can make it equal
    steps = []
    h_res = resumed.fit(X, checkpoint=ck, callback=lambda step, rep: steps.append(step), **kw)
    assert steps == [8, 9, 10]  # only the remaining batches ran
    a_full, m_full = full.get_state()
    a_res, m_res = resumed.get_state()
    assert sorted(a_full) == sorted(a_res) and m_full == m_res
    for k in a_full:
        assert np.array_equal(a_full[k], a_res[k]), k
    assert list(h_res) == list(h_full) and h_res.steps == h_full.steps
    assert all(np.array_equal(list(a.values()), list(b.values())) for a, b in zip(h_res + h_res.steps,
                                                                                 h_full + h_full.steps))


# ---------------------------------------------------------------- the fused CPU step (issue 15)
import pytest  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import central_difference  # noqa: E402


def _reference_inputs(net, x1, x2, layer):
    """The inputs of ``layer`` for both views by a plain forward (ops.conv, the registry activation, max_pool)."""
    from sparsecoding.ops.conv import conv
    from sparsecoding.ops.pool import max_pool

    h = [x1, x2]
    for l in range(layer):
        W, b = net.params[l]
        z = [net.f(conv(v, W, 1, W.shape[-1] // 2) + b.reshape(1, -1, 1, 1)) for v in h]
        h = [max_pool(v, 2)[0] if net.pools[l] == "m" else v for v in z]
    return h


def _pair_loss(net, h1, h2, W, b, W0, b0):
    """``(L(view 2 | SG view 1) + L(view 1 | SG view 2)) / 2`` at weights (W, b), targets at (W0, b0),
    from the public lpl_losses (DESIGN.md §7), and view 2's three losses."""
    from sparsecoding.ops.conv import conv
    from sparsecoding.plasticity.lpl import lpl_losses

    def z(h, W_, b_):
        return net.f(conv(h, W_, 1, W_.shape[-1] // 2) + b_.reshape(1, -1, 1, 1))

    def flat(v):
        return np.moveaxis(v, 1, -1).reshape(-1, v.shape[1])

    t1, t2 = z(h1, W0, b0), z(h2, W0, b0)  # the stop-gradient targets
    terms = net.terms
    parts = []
    for zv, target in ((z(h2, W, b), t1), (z(h1, W, b), t2)):
        pooled = zv.mean(axis=(2, 3)), target.mean(axis=(2, 3))
        if net.mode == "pool":
            lp, lh, ld = lpl_losses(*pooled)
        elif net.mode == "positions":
            lp, lh, ld = lpl_losses(flat(zv), flat(target))
        else:
            lp = lpl_losses(*pooled)[0]
            _, lh, ld = lpl_losses(flat(zv), flat(zv))
        parts.append((lp, lh, ld))
    total = sum(("pred" in terms) * lp + net.lambda1 * lh + net.lambda2 * ld for lp, lh, ld in parts) / 2
    return total, parts[0]


@pytest.mark.parametrize("mode", ["mixed", "pool", "positions"])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "linear"])
@pytest.mark.parametrize("predictive", [True, False])
def test_fused_step_gradient_equals_finite_differences(mode, activation, predictive):
    """The CPU step's gradient of every trained layer (the second fed channels-last and pooled by the
    first) is central finite differences of the pair loss built from lpl_losses on a plain forward,
    and its reported losses are lpl_losses of view 2 predicting view 1."""
    from sparsecoding.plasticity.lpl_net import LPLConvNet

    r = np.random.default_rng(4)
    net = LPLConvNet(2, (3, 4), "mi", activation=activation, mode=mode, predictive=predictive, lambda2=3.0,
                     weight_decay=0.01, seed=2, dtype="float64")
    for W, b in net.params:
        b[...] = 0.1 * r.standard_normal(b.shape)
    from sparsecoding.backend import capabilities

    assert net._fused_ok() == capabilities(np).numba  # the CPU path on the numba engines, else the generic one
    x1, x2 = r.standard_normal((3, 2, 7, 7)), r.standard_normal((3, 2, 7, 7))
    report = []
    grads = net._gradients(x1, x2, [0, 1], report)
    for (layer, gW, gb), rep in zip(grads, report):
        W0, b0 = net.params[layer]
        h1, h2 = _reference_inputs(net, x1, x2, layer)
        fdW = central_difference(lambda W_: _pair_loss(net, h1, h2, W_, b0, W0, b0)[0], W0.copy())
        fdb = central_difference(lambda b_: _pair_loss(net, h1, h2, W0, b_, W0, b0)[0], b0.copy())
        np.testing.assert_allclose(gW, fdW + 0.01 * W0, rtol=1e-5, atol=1e-7)  # as test_lpl.py's conv FD test
        np.testing.assert_allclose(gb, fdb, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(rep, _pair_loss(net, h1, h2, W0, b0, W0, b0)[1], rtol=1e-10, atol=1e-14)


def _reference_relu_gradient(W, b, x, target, mode, lambda1, lambda2):
    """The gradient of one view's loss for a ReLU layer, from the public dense lpl_grad_z on explicit
    feature matrices and the weight gradient as an explicit sum over the padded input."""
    from sparsecoding.plasticity.lpl import lpl_grad_z

    a = conv_ref(x, W, b)
    z = np.maximum(a, 0)
    n, m, h, w = z.shape
    flat = np.moveaxis(z, 1, -1).reshape(-1, m)
    gz = np.zeros_like(z)
    if mode in ("pool", "mixed"):
        terms = ("pred", "hebb", "dec") if mode == "pool" else ("pred",)
        g = lpl_grad_z(z.mean(axis=(2, 3)), target, lambda1, lambda2, terms=terms)
        gz += g[:, :, None, None] / (h * w)
    if mode in ("positions", "mixed"):
        prev = np.moveaxis(target, 1, -1).reshape(-1, m) if mode == "positions" else flat
        terms = ("pred", "hebb", "dec") if mode == "positions" else ("hebb", "dec")
        g = lpl_grad_z(flat, prev, lambda1, lambda2, terms=terms)
        gz += np.moveaxis(g.reshape(n, h, w, m), -1, 1)
    ga = gz * (a > 0)
    kh, kw = W.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    gW = np.zeros(W.shape)
    for i in range(kh):
        for j in range(kw):
            gW[:, :, i, j] = np.einsum("nkhw,nchw->kc", ga, xp[:, :, i:i + h, j:j + w])
    return gW, ga.sum(axis=(0, 2, 3))


@pytest.mark.parametrize("mode", ["mixed", "pool", "positions"])
@given(n=st.integers(2, 4), c=st.integers(1, 3), k=st.integers(1, 5), size=st.integers(2, 6),
       seed=st.integers(0, 2**31))
def test_fused_step_and_conv_delta_equal_explicit_relu_gradient(mode, n, c, k, size, seed):
    """ReLU (not differentiable at 0, so no finite differences): the step's gradient is the mean of the
    two views' gradients from the dense formulas and an explicit weight-gradient sum, and the public
    lpl_delta_conv of one view is minus that view's (float64; float32 against torch: bench/peers/lpl.py)."""
    from sparsecoding.plasticity.lpl import ACTIVATIONS, lpl_delta_conv
    from sparsecoding.plasticity.lpl_net import LPLConvNet

    r = np.random.default_rng(seed)
    net = LPLConvNet(c, (k,), "i", mode=mode, seed=seed % 1000, dtype="float64")
    x1, x2 = r.random((n, c, size, size)), r.random((n, c, size, size))
    W, b = net.params[0]
    b[...] = 0.05 * r.standard_normal(k)
    ((_, gW, gb),) = net._gradients(x1, x2, [0])
    z1, z2 = (np.maximum(conv_ref(x, W, b), 0) for x in (x1, x2))
    target = (lambda z: z) if mode == "positions" else (lambda z: z.mean(axis=(2, 3)))
    ref2 = _reference_relu_gradient(W, b, x2, target(z1), mode, 1.0, 10.0)
    ref1 = _reference_relu_gradient(W, b, x1, target(z2), mode, 1.0, 10.0)
    np.testing.assert_allclose(gW, 0.5 * (ref1[0] + ref2[0]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gb, 0.5 * (ref1[1] + ref2[1]), rtol=1e-9, atol=1e-12)
    dW, db, z = lpl_delta_conv(W, b, x2, target(z1), *ACTIVATIONS["relu"], 1, 1, mode=mode, weight_decay=0.1)
    np.testing.assert_allclose(dW, -ref2[0] - 0.1 * W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(db, -ref2[1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(z, z2, rtol=1e-12, atol=1e-15)


def conv_ref(x, W, b):
    from sparsecoding.ops.conv import conv

    return conv(x.astype(np.float64), W.astype(np.float64), 1, 1) + b.reshape(1, -1, 1, 1)


@given(n=st.integers(1, 4), c=st.integers(1, 4), k=st.integers(1, 5), h=st.integers(1, 6), w=st.integers(1, 6),
       rows=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_fused_forward_statistics_match_numpy(n, c, k, h, w, rows, seed):
    """Pass A in chunks of any size (straddling samples, split over the cores): the pre-activation is
    conv + b, the per-sample sums and the moments (count, mean, centred co-moment) are numpy's over
    the positions-as-samples matrix, and the next layer's input is max_pool of f(a)."""
    from sparsecoding.ops.pool import max_pool
    from sparsecoding.plasticity._lpl_cpu import FusedConvLPL

    r = np.random.default_rng(seed)
    x = r.standard_normal((n, c, h, w))
    W, b = r.standard_normal((k, c, 3, 3)), r.standard_normal(k)
    fused = FusedConvLPL(c, k, (3, 3), (h, w), np.float64, rows=rows)
    a, psum, (count, mean, m2) = fused.forward(0, x, W, b, 1)  # tanh
    ref = conv_ref(x, W, b)
    np.testing.assert_allclose(a.reshape(n, h, w, k), np.moveaxis(ref, 1, -1), rtol=1e-12, atol=1e-12)
    z = np.moveaxis(np.tanh(ref), 1, -1).reshape(-1, k)
    zc = z - z.mean(0)
    assert count == n * h * w
    np.testing.assert_allclose(psum, np.tanh(ref).sum(axis=(2, 3)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mean, z.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m2, zc.T @ zc, rtol=1e-10, atol=1e-10)
    if min(h, w) >= 2:
        pooled = np.moveaxis(max_pool(np.tanh(ref), 2)[0], 1, -1)
        np.testing.assert_allclose(fused.output(0, n, 1, True), pooled, rtol=1e-12, atol=1e-15)
    # the channels-last input of a later layer gives the same
    a_cl = fused.forward(1, np.ascontiguousarray(np.moveaxis(x, 1, -1)), W, b, 1, channels_last=True)[0]
    np.testing.assert_array_equal(a_cl, a)
