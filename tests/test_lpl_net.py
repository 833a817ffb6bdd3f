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
