"""The learning loop: exact resume after any interruption, settings checks, SIGINT, guards."""
import os
import signal

import numpy as np
import pytest

from sparsecoding.training import History, SettingsChanged, TrainingInterrupted, check_settings, fit_loop


class Toy:
    """Least squares by SGD with noisy gradients drawn from the epoch's generator."""

    def __init__(self, X, y):
        self.X, self.y = X, y
        self.w = np.zeros(X.shape[1])
        self.v = np.zeros(X.shape[1])  # momentum buffer: state beyond the weights
        self.seen = []

    def step(self, idx, rng, info):
        self.seen.append(idx.copy())
        r = self.X[idx] @ self.w - self.y[idx]
        g = self.X[idx].T @ r / len(idx) + 0.01 * rng.standard_normal(self.w.shape)
        self.v = 0.9 * self.v + g
        self.w = self.w - 0.05 * self.v
        return {"loss": 0.5 * float(np.mean(r**2))}

    def get_state(self):
        return {"w": self.w.copy(), "v": self.v.copy()}, {"note": "toy"}

    def set_state(self, arrays, meta):
        assert meta == {"note": "toy"}
        self.w, self.v = arrays["w"].copy(), arrays["v"].copy()


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((23, 4))
    return X, X @ np.arange(1.0, 5.0)


def run(model, ck=None, **kw):
    opts = dict(epochs=3, batch_size=5, seed=7, checkpoint=ck, progress=False, settings={"lr": 0.05},
                kind="toy", record_steps=True)
    opts.update(kw)
    return fit_loop(model, len(model.X), model.step, **opts)


def test_each_sample_once_per_epoch_and_weighted_means(data):
    m = Toy(*data)
    h = run(m, epochs=2)
    assert isinstance(h, History) and [r["epoch"] for r in h] == [1, 2]
    per_epoch = 5  # ceil(23 / 5)
    for e in range(2):
        idx = np.concatenate(m.seen[e * per_epoch:(e + 1) * per_epoch])
        assert sorted(idx.tolist()) == list(range(23))
    # epoch loss = batch losses weighted by batch size (the last batch has 3 samples)
    sizes = np.array([5, 5, 5, 5, 3])
    losses = np.array([s["loss"] for s in h.steps[:5]])
    assert h[0]["loss"] == pytest.approx((sizes * losses).sum() / 23)


class Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", [1, 4, 5, 7, 13])
@pytest.mark.parametrize("every", [1, 2])
def test_resume_after_a_crash_is_bit_identical(tmp_path, data, crash_at, every):
    ref = Toy(*data)
    h_ref = run(ref)
    m = Toy(*data)
    ck = str(tmp_path / "ck.npz")
    original = m.step

    def crashing(idx, rng, info):
        if info["step"] == crash_at:
            raise Crash  # like SIGKILL: nothing after the last checkpoint survives
        return original(idx, rng, info)

    with pytest.raises(Crash):
        fit_loop(
            m, 23, crashing, epochs=3, batch_size=5, seed=7, checkpoint=ck, checkpoint_every=every,
            progress=False, settings={"lr": 0.05}, kind="toy", record_steps=True)
    fresh = Toy(*data)  # a new process: nothing but the checkpoint
    h = run(fresh, ck, checkpoint_every=every)
    np.testing.assert_array_equal(fresh.w, ref.w)
    np.testing.assert_array_equal(fresh.v, ref.v)
    assert list(h) == list(h_ref) and h.steps == h_ref.steps


@pytest.mark.parametrize("at", [2, 4])
def test_sigint_checkpoints_and_resumes_exactly(tmp_path, data, at):
    ref = Toy(*data)
    run(ref)
    m = Toy(*data)
    ck = str(tmp_path / "ck.npz")
    original = m.step

    def interrupted(idx, rng, info):
        out = original(idx, rng, info)
        if info["step"] == at:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during a batch: the batch still finishes
        return out

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the test runs as a background job
    with pytest.raises(TrainingInterrupted) as exc:
        fit_loop(m, 23, interrupted, epochs=3, batch_size=5, seed=7, checkpoint=ck, progress=False,
                 settings={"lr": 0.05}, kind="toy", record_steps=True)
    assert exc.value.checkpoint == ck and len(m.seen) == at + 1
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is restored
    fresh = Toy(*data)
    run(fresh, ck)
    np.testing.assert_array_equal(fresh.w, ref.w)


def test_changed_settings_are_refused_by_name(tmp_path, data):
    ck = str(tmp_path / "ck.npz")
    run(Toy(*data), ck, epochs=1)
    with pytest.raises(SettingsChanged, match=r"lr: 0\.05 -> 0\.1"):
        run(Toy(*data), ck, settings={"lr": 0.1})
    h = run(Toy(*data), ck, settings={"lr": 0.1}, allow_changes=True, epochs=2)
    assert len(h) == 2
    with pytest.raises(ValueError, match="holds a 'toy' model, not a 'other'"):
        run(Toy(*data), ck, kind="other")


def test_check_settings_treats_tuples_as_lists():
    assert check_settings({"a": [1, 2]}, {"a": (1, 2)}) == []
    with pytest.raises(SettingsChanged, match="b: <unset> -> 3"):
        check_settings({"a": 1}, {"a": 1, "b": 3})


def test_max_steps_and_extension(tmp_path, data):
    ck = str(tmp_path / "ck.npz")
    ref = Toy(*data)
    run(ref, epochs=2)
    m = Toy(*data)
    h = run(m, ck, epochs=2, max_steps=7)
    assert len(m.seen) == 7 and len(h) == 1
    fresh = Toy(*data)
    run(fresh, ck, epochs=2)
    np.testing.assert_array_equal(fresh.w, ref.w)


def test_divergence_and_bad_arguments(data):
    m = Toy(*data)
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 1, batch 1"):
        fit_loop(m, 23, lambda idx, rng, info: {"loss": float("nan")}, epochs=1, batch_size=5, progress=False)
    for kw, match in [({"epochs": 0}, "epochs must be a positive integer"),
                      ({"batch_size": 0}, "batch_size must be a positive integer"),
                      ({"batch_size": 2.5}, "batch_size must be a positive integer"),
                      ({"checkpoint_every": 0}, "checkpoint_every must be a positive integer"),
                      ({"max_steps": -1}, "max_steps must be a positive integer")]:
        opts = dict(epochs=1, batch_size=5, progress=False) | kw
        with pytest.raises(ValueError, match=match):
            fit_loop(m, 23, m.step, **opts)
    with pytest.raises(ValueError, match="n_samples"):
        fit_loop(m, 0, m.step, epochs=1, batch_size=5, progress=False)


def test_history_csv(tmp_path):
    h = History([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25, "test": 0.1}])
    h.to_csv(tmp_path / "h.csv")
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert lines[0] == "epoch,loss,test" and h.column("loss") == [0.5, 0.25]


def _families():
    """Every model family, small: ``(name, model factory, X, y)``."""
    from sparsecoding.eqprop import ConvEBM, MLPEBM
    from sparsecoding.eqprop.lcacnn import LCACNN
    from sparsecoding.lca import LCA, LCAConv2D
    from sparsecoding.plasticity.foldiak import FoldiakNetwork
    from sparsecoding.plasticity.lpl_net import LPLConvNet

    r = np.random.default_rng(0)
    img, vec, y = r.uniform(0, 1, (16, 1, 8, 8)), r.uniform(0, 1, (16, 12)), r.integers(0, 3, 16)
    return [
        ("LCAConv2D", lambda: LCAConv2D(4, 1, kernel_size=3, stride=2, lca_iters=5, seed=0), img, None),
        ("LCA", lambda: LCA(6, 12, lca_iters=5, seed=0), vec, None),
        ("ConvEBM", lambda: ConvEBM(8, [1, 3], [3], [1], [1], "m", [3], seed=0), img, y),
        ("MLPEBM", lambda: MLPEBM([12, 5, 3], seed=0), vec, y),
        ("LCACNN", lambda: LCACNN(8, 1, [3], [3], [1], [1], "m", [3], lca_feats=4, lca_ksize=3, lca_iters=5,
                                  dict_training="learn", seed=0), img, y),
        ("LPLConvNet", lambda: LPLConvNet(1, channels=(4,), pools="m", seed=0), img, None),
        ("FoldiakNetwork", lambda: FoldiakNetwork(12, 4, seed=0), vec, None),
    ]


@pytest.mark.parametrize("family", range(7), ids=[f[0] for f in _families()])
def test_every_family_learns_through_one_fit_signature(tmp_path, family):
    # the same keywords, the same History of per-epoch records, callbacks once per epoch, a checkpoint written
    name, make, X, y = _families()[family]
    seen = []
    fit = make().fit
    kw = dict(epochs=2, batch_size=8, seed=1, callbacks=[seen.append], checkpoint=str(tmp_path / "ck.npz"),
              progress=False)
    if name in ("ConvEBM", "MLPEBM", "LCACNN"):
        kw.update(T1=3, T2=2)
    hist = fit(X, y, **kw)
    assert isinstance(hist, History) and [r["epoch"] for r in hist] == [1, 2]
    assert [r["epoch"] for r in seen] == [1, 2]
    assert (tmp_path / "ck.npz").exists()
