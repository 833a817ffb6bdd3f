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
