"""EqProp training on the one learning loop: ConvEBM.fit / train / evaluate, checkpoints and exact resume."""
import signal

import numpy as np
import pytest

from sparsecoding.checkpoint import load_checkpoint
from sparsecoding.data import digits_split
from sparsecoding.eqprop import ConvEBM, MLPEBM, evaluate, train
from sparsecoding.eqprop.train import run_settings
from sparsecoding.training import History, SettingsChanged, TrainingInterrupted

OPTS = dict(T1=8, T2=3, lrs=[0.1, 0.05], progress=False)


@pytest.fixture(scope="module")
def digits():
    Xtr, ytr, Xte, yte = digits_split(1400, seed=12345)
    return Xtr[:96], ytr[:96], Xte[:40], yte[:40]


def small_net(seed=0, **kw):
    return ConvEBM(8, [1, 4], [3], [1], [1], "m", [10], seed=seed, **kw)


def arrays_of(path):
    return load_checkpoint(path)[0]


def assert_same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_fit_returns_history_and_test_error_matches_evaluate(digits):
    Xtr, ytr, Xte, yte = digits
    net = small_net()
    hist = net.fit(Xtr, ytr, epochs=2, batch_size=16, seed=3, X_test=Xte, y_test=yte, **OPTS)
    assert isinstance(hist, History) and [r["epoch"] for r in hist] == [1, 2]
    assert set(hist[-1]) >= {"train_error", "test_error", "seconds", "lr_scale"}
    assert hist[-1]["test_error"] == evaluate(net, Xte, yte, OPTS["T1"])
    assert hist[-1]["train_error"] < 0.9


def test_get_state_set_state_round_trip_and_architecture_check():
    a, b = small_net(seed=0), small_net(seed=1)
    arrays, meta = a.get_state()
    b.set_state(arrays, meta)
    for (Wa, ba), (Wb, bb) in zip(a.params, b.params):
        assert np.array_equal(Wa, Wb) and np.array_equal(ba, bb)
    arrays["W0"][...] = 7  # get_state returns copies
    assert not np.array_equal(a.params[0][0], arrays["W0"])
    other = ConvEBM(8, [1, 6], [3], [1], [1], "m", [10], seed=0)
    with pytest.raises(ValueError, match="shapes"):
        other.set_state(*a.get_state())
    with pytest.raises(ValueError, match="activation"):
        small_net(activation="tanh").set_state(*a.get_state())
    with pytest.raises(ValueError, match="W0"):
        other.set_state(a.get_state()[0])
    mlp = MLPEBM([64, 10], seed=0)
    with pytest.raises(ValueError, match="class"):
        mlp.set_state(*a.get_state())


@pytest.mark.parametrize("flags", [dict(third_phase=True, data_aug=True), dict(random_sign=True, lr_decay=True)])
def test_sigint_and_crash_resume_bit_identically(tmp_path, digits, flags):
    Xtr, ytr, Xte, yte = digits
    kw = dict(epochs=2, batch_size=16, seed=5, X_test=Xte, y_test=yte, checkpoint_every=2, **OPTS, **flags)
    ref = tmp_path / "ref.npz"
    hist_ref = small_net().fit(Xtr, ytr, checkpoint=str(ref), **kw)

    ck = tmp_path / "run.npz"
    net = small_net()
    calls = {"n": 0}
    real = net.ep_gradients

    def crash_at_5(*a, **k):  # an exception mid-epoch: the checkpoint of batch 4 stays
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("crash")
        return real(*a, **k)

    net.ep_gradients = crash_at_5
    with pytest.raises(RuntimeError):
        net.fit(Xtr, ytr, checkpoint=str(ck), **kw)

    net = small_net(seed=99)  # the checkpoint restores everything, the initialisation included
    calls["n"] = 0
    real = net.ep_gradients

    def sigint_at_5(*a, **k):  # Ctrl-C in the second epoch: the batch finishes, then a checkpoint
        calls["n"] += 1
        if calls["n"] == 5:
            signal.raise_signal(signal.SIGINT)
        return real(*a, **k)

    net.ep_gradients = sigint_at_5
    with pytest.raises(TrainingInterrupted) as info:
        net.fit(Xtr, ytr, checkpoint=str(ck), **kw)
    assert len(info.value.history) == 1
    _, meta = load_checkpoint(ck)
    assert (meta["loop"]["epoch"], meta["loop"]["batch"]) == (1, 3)

    hist = small_net(seed=7).fit(Xtr, ytr, checkpoint=str(ck), **kw)
    assert_same(arrays_of(ref), arrays_of(ck))
    drop = [{k: v for k, v in r.items() if k != "seconds"} for r in hist]
    assert drop == [{k: v for k, v in r.items() if k != "seconds"} for r in hist_ref]


def test_more_epochs_continue_a_run_without_lr_decay(tmp_path, digits):
    Xtr, ytr, _, _ = digits
    kw = dict(batch_size=32, seed=1, **OPTS)
    small_net().fit(Xtr, ytr, epochs=2, checkpoint=str(tmp_path / "a.npz"), **kw)
    small_net().fit(Xtr, ytr, epochs=1, checkpoint=str(tmp_path / "b.npz"), **kw)
    hist = small_net().fit(Xtr, ytr, epochs=2, checkpoint=str(tmp_path / "b.npz"), **kw)
    assert [r["epoch"] for r in hist] == [1, 2]
    assert_same(arrays_of(tmp_path / "a.npz"), arrays_of(tmp_path / "b.npz"))


def test_changed_settings_are_named_and_can_be_allowed(tmp_path, digits):
    Xtr, ytr, _, _ = digits
    ck = str(tmp_path / "c.npz")
    kw = dict(batch_size=32, seed=1, checkpoint=ck, progress=False, T1=8, T2=3, lrs=[0.1, 0.05])
    small_net().fit(Xtr, ytr, epochs=1, lr_decay=True, **kw)
    with pytest.raises(SettingsChanged, match="epochs: 1 -> 2"):
        small_net().fit(Xtr, ytr, epochs=2, lr_decay=True, **kw)
    with pytest.raises(SettingsChanged, match="T2: 3 -> 4"):
        small_net().fit(Xtr, ytr, epochs=1, lr_decay=True, **{**kw, "T2": 4})
    with pytest.raises(SettingsChanged, match="n_train: 96 -> 64"):
        small_net().fit(Xtr[:64], ytr[:64], epochs=1, lr_decay=True, **kw)
    with pytest.raises(SettingsChanged, match="architecture"):
        small_net(activation="tanh").fit(Xtr, ytr, epochs=1, lr_decay=True, **kw)
    hist = small_net().fit(Xtr, ytr, epochs=2, lr_decay=True, allow_changes=True, **kw)
    assert len(hist) == 2


def test_settings_cover_what_changes_the_result():
    net = small_net()
    s = run_settings(net, 100)
    for key in ("architecture", "n_train", "mbs", "T1", "T2", "betas", "third_phase", "random_sign", "optim", "lrs",
                "wds", "mmt", "lr_decay", "data_aug", "seed", "schedule", "tol"):
        assert key in s
    assert "epochs" not in s and run_settings(net, 100, epochs=3, lr_decay=True)["epochs"] == 3


def test_run_folder_outputs_and_mlp(tmp_path, digits):
    Xtr, ytr, Xte, yte = digits
    net = MLPEBM([64, 16, 10], seed=0)
    hist = train(net, Xtr, ytr, Xte, yte, epochs=2, mbs=32, T1=8, T2=3, lrs=[0.1, 0.05], save=str(tmp_path),
                 progress=False, args={"note": 1})
    for name in ("checkpoint.npz", "metrics.csv", "error_curves.png", "args.json"):
        assert (tmp_path / name).exists(), name
    assert hist[-1]["test_error"] == evaluate(net, Xte, yte, 8)


@pytest.mark.parametrize("kw, match", [
    (dict(T1=0), "T1"), (dict(T2=1.5), "T2"), (dict(betas=(0.5, 0.5)), "betas must differ"),
    (dict(betas=(0.0, float("nan"))), "betas"), (dict(third_phase=True, betas=(0.5, 0.0)), "third_phase"),
    (dict(mbs=0), "mbs"), (dict(epochs=0), "epochs"), (dict(schedule="fast"), "schedule"), (dict(tol=0), "tol"),
    (dict(lrs=[0.1, -1]), "lrs"), (dict(lrs=[0.1, 0.1, 0.1]), "one value per synapse"), (dict(optim="rms"), "optim"),
    (dict(seed=-1), "seed"), (dict(mmt=1.0), "mmt"),
])
def test_bad_arguments_raise_naming_them(digits, kw, match):
    Xtr, ytr, _, _ = digits
    args = dict(epochs=1, mbs=32, T1=4, T2=2, lrs=[0.1, 0.05], progress=False) | kw
    with pytest.raises(ValueError, match=match):
        train(small_net(), Xtr, ytr, **args)


def test_bad_labels_and_data(digits):
    Xtr, ytr, _, _ = digits
    with pytest.raises(ValueError, match="ytr"):
        train(small_net(), Xtr, ytr[:-1], progress=False)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        train(small_net(), Xtr, ytr + 5, progress=False)
    with pytest.raises(ValueError, match="both"):
        train(small_net(), Xtr, ytr, Xtr, progress=False)
    with pytest.raises(ValueError, match="T"):
        evaluate(small_net(), Xtr, ytr, 0)


def test_mlp_fit_split_into_jobs_ends_bit_identical(tmp_path, digits):
    # MLPEBM through the same fit: a run stopped after 5 batches (max_steps) and resumed from its
    # checkpoint by a fresh network ends with the same weights and history as an uninterrupted one
    Xtr, ytr, _, _ = digits
    kw = dict(epochs=2, batch_size=16, seed=4, T1=6, T2=3, lrs=[0.1, 0.05], progress=False)
    ref = MLPEBM([64, 16, 10], seed=0)
    hist_ref = ref.fit(Xtr.reshape(len(Xtr), -1), ytr, checkpoint=str(tmp_path / "ref.npz"), **kw)
    ck = str(tmp_path / "run.npz")
    MLPEBM([64, 16, 10], seed=0).fit(Xtr.reshape(len(Xtr), -1), ytr, checkpoint=ck, max_steps=5, **kw)
    assert (load_checkpoint(ck)[1]["loop"]["epoch"], load_checkpoint(ck)[1]["loop"]["batch"]) == (0, 5)
    net = MLPEBM([64, 16, 10], seed=3)
    hist = net.fit(Xtr.reshape(len(Xtr), -1), ytr, checkpoint=ck, **kw)
    for (W, b), (W2, b2) in zip(net.params, ref.params):
        assert np.array_equal(W, W2) and np.array_equal(b, b2)
    drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert isinstance(hist, History) and drop(hist) == drop(hist_ref)
