"""sparsecoding.save / sparsecoding.load: exact round trips of every model in both precisions, and
named errors (ModelFileError) for truncated, corrupt, edited and foreign files."""
import io
import json
import os
import zipfile

import numpy as np
import pytest

import sparsecoding
from sparsecoding import ModelFileError, load, save
from sparsecoding.backend import to_numpy
from sparsecoding.eqprop.lcacnn import LCACNN
from sparsecoding.eqprop.network import ConvEBM, MLPEBM
from sparsecoding.estimators import ConvLCADictionaryLearning, LCADictionaryLearning, LCASparseCoder
from sparsecoding.io import FORMAT_VERSION, HEADER, read_header
from sparsecoding.lca import LCA, LCAConv1D, LCAConv2D, LCAConv3D
from sparsecoding.plasticity.foldiak import FoldiakNetwork
from sparsecoding.plasticity.lpl_net import LPLConvNet

DTYPES = ["float32", "float64"]
RNG = np.random.default_rng(0)


def _h(x):
    return np.asarray(to_numpy(x))


# ----------------------------------------------------------------------------- the models
# each case: (build(dtype) -> trained model, inputs(dtype), outputs(model, inputs) -> list of arrays,
#             arrays(model) -> dict of every array that defines the model)
def _lca_arrays(m):
    return {"weights": _h(m.weights)}


def _lca_out(m, x):
    res = m.solve(x) if hasattr(m, "solve") else m.encode(x)
    return [_h(res["acts"]), _h(m.forward(x))]


def _lca(cls, shape, **kw):
    def build(dtype):
        layer = cls(**kw, dtype=dtype, seed=0)
        x = RNG.standard_normal((6, *shape)).astype(dtype)
        layer.fit(x, epochs=1, batch_size=3, progress=False)  # a learned dictionary, forward_pass > 1
        return layer
    return build


def _ebm_arrays(m):
    return {f"{a}{k}": _h(v) for k, pair in enumerate(m.params) for a, v in zip("Wb", pair)}


def _ebm_out(m, x):
    states = m.relax(x, m.init_states(len(x)), 6).state
    return [_h(m.predict(x, 6))] + [_h(s) for s in states]


def _ebm(build_net):
    def build(dtype):
        net = build_net(dtype)
        for W, b in net.params:  # move the parameters off their initial values
            W[...] += net.xp.asarray(0.01 * RNG.standard_normal(W.shape), dtype=W.dtype)
            b[...] += net.xp.asarray(0.01 * RNG.standard_normal(b.shape), dtype=b.dtype)
        return net
    return build


def _lcacnn_arrays(m):
    return {**_ebm_arrays(m), "lca_weights": _h(m.lca.weights)}


def _lcacnn_out(m, x):
    code, states = m.relax(x, 4).state
    return [_h(m.predict(x, 4)), _h(code)] + [_h(s) for s in states]


def _lpl_build(dtype):
    net = LPLConvNet(1, (3, 4), "mi", dtype=dtype, seed=0)
    x = RNG.standard_normal((4, 1, 8, 8)).astype(dtype)
    net.train_step(x, x[::-1].copy())  # the Adam buffers and step count are state too
    return net


def _lpl_arrays(m):
    state = m.optimizer.state_dict()
    out = {f"{a}{k}": _h(v) for k, pair in enumerate(m.params) for a, v in zip("Wb", pair)}
    out.update({f"{buf}{i}": _h(v) for buf, values in state["buffers"].items() for i, v in enumerate(values)})
    return out


def _lpl_out(m, x):
    out = [_h(z) for z in m.forward(x)]
    m.train_step(x, x[::-1].copy())  # the next step (optimiser state included) is identical too
    return out + [_h(W) for W, _ in m.params]


def _foldiak_build(dtype):
    net = FoldiakNetwork(16, 4, seed=0, dtype=dtype)
    net.fit((RNG.random((20, 16)) > 0.7).astype(dtype), epochs=1, batch_size=5, progress=False)
    return net


def _foldiak_arrays(m):
    return {k: _h(getattr(m, k)) for k in ("Q", "W", "t")}


def _foldiak_out(m, x):
    out = [_h(m.transform(x)), _h(m.settle(x).state)]
    m.fit(x, epochs=1, batch_size=2, progress=False)  # the model's own generator drew the same order
    return out + [_h(m.Q)]


def _estimator_arrays(m):
    arrays, _ = m.get_state()
    return {k: np.asarray(v) for k, v in arrays.items()}


def _estimator_out(m, x):
    codes = m.transform(x)
    return [codes, m.inverse_transform(codes)]


CASES = {
    "LCA": (_lca(LCA, (10,), out_neurons=6, in_neurons=10, lambda_=0.1, solver="fista", tol=1e-6, lca_iters=200),
            lambda d: RNG.standard_normal((5, 10)).astype(d), _lca_out, _lca_arrays),
    "LCA-lca-solver": (_lca(LCA, (8,), out_neurons=5, in_neurons=8, lambda_=0.2, nonneg=False, lca_iters=60,
                            tau=20, track_metrics=True, transfer_func="hard_threshold"),
                       lambda d: RNG.standard_normal((4, 8)).astype(d), _lca_out, _lca_arrays),
    "LCAConv1D": (_lca(LCAConv1D, (2, 12), out_neurons=4, in_neurons=2, kernel_size=3, lca_iters=30, stride=2),
                  lambda d: RNG.standard_normal((3, 2, 12)).astype(d), _lca_out, _lca_arrays),
    "LCAConv2D": (_lca(LCAConv2D, (1, 8, 8), out_neurons=4, in_neurons=1, kernel_size=3, stride=2, solver="fista",
                       tol=1e-5, lca_iters=100, nonneg=False, lambda_=0.1),
                  lambda d: RNG.standard_normal((3, 1, 8, 8)).astype(d), _lca_out, _lca_arrays),
    "LCAConv3D": (_lca(LCAConv3D, (1, 5, 5, 5), out_neurons=3, in_neurons=1, kernel_size=3, pad="valid",
                       lateral="gram", lca_iters=15),
                  lambda d: RNG.standard_normal((2, 1, 5, 5, 5)).astype(d), _lca_out, _lca_arrays),
    "ConvEBM": (_ebm(lambda d: ConvEBM(8, [1, 3], [3], [1], [1], "m", [4, 3], dtype=d, seed=0)),
                lambda d: RNG.random((3, 1, 8, 8)).astype(d), _ebm_out, _ebm_arrays),
    "ConvEBM-softmax": (_ebm(lambda d: ConvEBM(8, [1, 3, 4], [3, 3], [1, 1], [1, 0], "ai", [5, 3], softmax=True,
                                               loss="cel", activation="tanh", dtype=d, seed=1)),
                        lambda d: RNG.random((3, 1, 8, 8)).astype(d), _ebm_out, _ebm_arrays),
    "MLPEBM": (_ebm(lambda d: MLPEBM([6, 5, 3], dtype=d, seed=0)),
               lambda d: RNG.random((3, 6)).astype(d), _ebm_out, _ebm_arrays),
    "LCACNN-learn": (_ebm(lambda d: LCACNN(8, 1, [3], [3], [1], [1], "m", [3], lca_feats=4, lca_ksize=3, lca_iters=5,
                                           dict_training="learn", dtype=d, seed=0)),
                     lambda d: RNG.random((2, 1, 8, 8)).astype(d), _lcacnn_out, _lcacnn_arrays),
    "LCACNN-pretrained": (_ebm(lambda d: LCACNN(8, 1, [3], [3], [1], [1], "m", [3], lca_feats=4, lca_ksize=3,
                                                lca_iters=20, lca_solver="fista", lca_tol=1e-4, scale_feedback=0.1,
                                                dictionary=RNG.standard_normal((4, 1, 3, 3)).astype(d), dtype=d,
                                                seed=0)),
                          lambda d: RNG.random((2, 1, 8, 8)).astype(d), _lcacnn_out, _lcacnn_arrays),
    "LPLConvNet": (_lpl_build, lambda d: RNG.standard_normal((3, 1, 8, 8)).astype(d), _lpl_out, _lpl_arrays),
    "FoldiakNetwork": (_foldiak_build, lambda d: (RNG.random((6, 16)) > 0.7).astype(d), _foldiak_out,
                       _foldiak_arrays),
    "LCASparseCoder": (lambda d: LCASparseCoder(RNG.standard_normal((7, 5)).astype(d), lambda_=0.2,
                                                nonneg=True).fit(RNG.standard_normal((4, 5)).astype(d)),
                       lambda d: RNG.standard_normal((4, 5)).astype(d), _estimator_out, _estimator_arrays),
    "LCADictionaryLearning": (lambda d: LCADictionaryLearning(6, lambda_=0.1, max_iter=2, batch_size=8,
                                                              random_state=0, dtype=d).fit(
                                  RNG.standard_normal((24, 5))),
                              lambda d: RNG.standard_normal((4, 5)).astype(d), _estimator_out, _estimator_arrays),
    "ConvLCADictionaryLearning": (lambda d: ConvLCADictionaryLearning(3, (3, 5), stride=2, max_iter=1, batch_size=4,
                                                                      image_shape=(1, 7, 7), random_state=0,
                                                                      dtype=d).fit(RNG.standard_normal((8, 49))),
                                  lambda d: RNG.standard_normal((3, 49)).astype(d), _estimator_out,
                                  _estimator_arrays),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_is_exact(case, dtype, tmp_path):
    build, inputs, outputs, arrays = CASES[case]
    model = build(dtype)
    x = inputs(dtype)
    path = tmp_path / "model.npz"
    assert save(model, path) == os.fspath(path)
    twin = load(path)
    assert type(twin) is type(model)
    a, b = arrays(model), arrays(twin)
    assert a.keys() == b.keys() and a
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    if case.startswith("LCA") and not case.startswith(("LCACNN", "LCASparse", "LCADict")):
        assert twin.forward_pass == model.forward_pass > 1
    if case.endswith("DictionaryLearning") or case == "LCASparseCoder":
        assert twin.get_params(deep=False).keys() == model.get_params(deep=False).keys()
    # identical outputs, computed first on the original, then on the loaded copy
    out_a, out_b = outputs(model, x), outputs(twin, x)
    for u, v in zip(out_a, out_b):
        assert u.dtype == v.dtype and np.array_equal(u, v)
    # the precision is kept
    first = next(iter(a.values()))
    if first.dtype.kind == "f":
        assert first.dtype == np.dtype(dtype)


def test_lca_settings_round_trip(tmp_path):
    layer = LCAConv2D(5, 3, kernel_size=(3, 5), stride=(1, 2), lambda_=0.05, tau=30, eta=0.002, lca_iters=77,
                      pad="valid", return_vars=("acts", "recons"), return_all_ts=True, nonneg=False,
                      track_metrics=True, transfer_func="hard_threshold", input_zero_mean=False, input_unit_var=False,
                      d_update_clip=0.5, dtype="float64", tol=1e-3, check_every=4, lateral="gram", seed=3)
    save(layer, tmp_path / "l.npz")
    twin = load(tmp_path / "l.npz", expected=LCAConv2D)
    for name in ("out_neurons", "in_neurons", "kernel_size", "stride", "lambda_", "tau", "eta", "lca_iters", "pad",
                 "return_vars", "return_all_ts", "nonneg", "track_metrics", "transfer_func", "input_zero_mean",
                 "input_unit_var", "d_update_clip", "dtype", "tol", "solver", "check_every", "lateral"):
        assert getattr(twin, name) == getattr(layer, name), name
    x = RNG.standard_normal((2, 3, 9, 11))
    for u, v in zip(layer(x), twin(x)):
        assert np.array_equal(_h(u), _h(v))
    header = read_header(tmp_path / "l.npz")
    assert header["model"] == "LCAConv2D" and header["version"] == FORMAT_VERSION
    assert header["arrays"] == {"weights": {"shape": [5, 3, 3, 5], "dtype": "<f8"}}
    # the default infinite clip survives JSON
    save(LCA(3, 4), tmp_path / "d.npz")
    assert load(tmp_path / "d.npz").d_update_clip == np.inf


def test_unsaveable_settings(tmp_path):
    layer = LCA(3, 4, lr_schedule=lambda n: 0.01)
    with pytest.warns(UserWarning, match="lr_schedule"):
        save(layer, tmp_path / "a.npz")
    assert load(tmp_path / "a.npz").lr_schedule is None
    with pytest.raises(TypeError, match="transfer_func"):
        save(LCA(3, 4, transfer_func=lambda u: u), tmp_path / "b.npz")
    with pytest.raises(TypeError, match="random_state"):
        save(LCADictionaryLearning(random_state=np.random.RandomState(0)), tmp_path / "c.npz")
    with pytest.raises(TypeError, match="does not know how to save"):
        save(object(), tmp_path / "d.npz")
    assert not (tmp_path / "b.npz").exists() and not (tmp_path / "c.npz").exists()


def test_unfitted_estimator_round_trip(tmp_path):
    est = LCADictionaryLearning(4, lambda_=0.3, dict_init=RNG.standard_normal((4, 6)), random_state=5)
    save(est, tmp_path / "e.npz")
    twin = load(tmp_path / "e.npz")
    assert not hasattr(twin, "components_")
    assert np.array_equal(twin.dict_init, est.dict_init) and twin.random_state == 5 and twin.lambda_ == 0.3
    X = RNG.standard_normal((16, 6))
    np.testing.assert_array_equal(twin.fit(X).components_, est.fit(X).components_)


def test_load_on_each_backend(xp, tmp_path):
    model = CASES["LCAConv2D"][0]("float32")
    save(model, tmp_path / "m.npz")
    name = "cupy" if xp is not np else "numpy"
    twin = load(tmp_path / "m.npz", backend=name)
    assert twin.xp is xp and np.array_equal(_h(twin.weights), _h(model.weights))
    x = RNG.standard_normal((2, 1, 8, 8)).astype("float32")
    np.testing.assert_allclose(_h(twin.solve(xp.asarray(x))["acts"] if hasattr(twin, "solve") else
                                  twin.encode(xp.asarray(x))["acts"]), _lca_out(model, x)[0], atol=1e-4)
    net = CASES["ConvEBM"][0]("float64")
    save(net, tmp_path / "n.npz")
    twin = load(tmp_path / "n.npz", backend=name)
    assert twin.xp is xp
    for (W, b), (V, c) in zip(net.params, twin.params):
        assert np.array_equal(_h(W), _h(V)) and np.array_equal(_h(b), _h(c))


# ----------------------------------------------------------------------------- bad files
@pytest.fixture(scope="module")
def _good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "good.npz"
    save(LCAConv2D(4, 1, kernel_size=3, stride=2, dtype="float32", seed=0), path)
    return path.read_bytes()


@pytest.fixture
def saved(_good_file, tmp_path):
    path = tmp_path / "good.npz"
    path.write_bytes(_good_file)
    return path


def _rewrite(src, dst, header=None, drop=(), extra=None):
    """A copy of the model file ``src`` with an edited header, arrays dropped or added."""
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    head = json.loads(bytes(arrays.pop(HEADER)).decode())
    if header is not None:
        header(head)
    for k in drop:
        arrays.pop(k)
    arrays.update(extra or {})
    np.savez(dst, **{HEADER: np.frombuffer(json.dumps(head).encode(), np.uint8)}, **arrays)
    return dst


def _fails(path, match, **kw):
    with pytest.raises(ModelFileError, match=match) as info:
        load(path, **kw)
    assert info.value.path == os.fspath(path) and os.fspath(path) in str(info.value)
    assert isinstance(info.value, ValueError)
    return info.value


def test_truncated_files(saved, tmp_path):
    data = saved.read_bytes()
    for n in (len(data) - 1, len(data) - 30, len(data) // 2, 200, 10, 2):
        bad = tmp_path / f"cut{n}.npz"
        bad.write_bytes(data[:n])
        _fails(bad, "truncated or corrupt|not an .npz")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _fails(empty, "empty")


def test_corrupt_bytes(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo("weights.npy")
    off = info.header_offset
    n_name, n_extra = (int.from_bytes(data[off + i:off + i + 2], "little") for i in (26, 28))
    start = off + 30 + n_name + n_extra  # the member's data: a 128-byte .npy header, then the values
    data[start + 128 + 10] ^= 0xFF
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    _fails(bad, "weights.*(truncated or corrupt)")
    noise = tmp_path / "noise.npz"
    noise.write_bytes(np.random.default_rng(1).bytes(4000))
    _fails(noise, "not an .npz")
    noise_zip = tmp_path / "noise_zip.npz"
    noise_zip.write_bytes(b"PK\x03\x04" + np.random.default_rng(2).bytes(4000))
    _fails(noise_zip, "truncated or corrupt")


def test_edited_version_and_header(saved, tmp_path):
    def set_version(v):
        return lambda h: h.update(version=v)

    for v in (FORMAT_VERSION + 1, 0, "1", None):
        _fails(_rewrite(saved, tmp_path / "v.npz", set_version(v)), "unknown format version")
    err = _fails(_rewrite(saved, tmp_path / "v2.npz", set_version(FORMAT_VERSION + 1)), "upgrade")
    assert "reads version 1" in str(err)
    _fails(_rewrite(saved, tmp_path / "f.npz", lambda h: h.update(format="other")), "not a sparsecoding model")
    _fails(_rewrite(saved, tmp_path / "t.npz", lambda h: h.update(model="Perceptron")), "unknown model type")
    garbled = tmp_path / "g.npz"
    np.savez(garbled, **{HEADER: np.frombuffer(b"{not json", np.uint8)})
    _fails(garbled, "header is unreadable")
    # settings the model refuses: nothing is returned
    _fails(_rewrite(saved, tmp_path / "s.npz", lambda h: h["settings"].update(lambda_=-1.0)), "cannot be rebuilt.*lambda_")


def test_foreign_and_mismatched_files(saved, tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.arange(3), b=np.ones(2))
    _fails(foreign, "not a sparsecoding model file.*arrays \\['a', 'b'\\]")
    from sparsecoding.checkpoint import save_checkpoint

    ckpt = tmp_path / "ckpt.npz"
    save_checkpoint(ckpt, {"weights": np.ones(3)}, {"epoch": 1})
    _fails(ckpt, "training checkpoint")
    npy = tmp_path / "plain.npy"
    np.save(npy, np.ones(3))
    _fails(npy, "not an .npz")
    # missing, unexpected and malformed arrays
    _fails(_rewrite(saved, tmp_path / "m.npz", drop=("weights",)), "missing arrays \\['weights'\\]")
    _fails(_rewrite(saved, tmp_path / "x.npz", extra={"other": np.ones(2)}), "not in the header")
    _fails(_rewrite(saved, tmp_path / "w.npz", extra={"weights": np.ones((4, 1, 3, 3), np.float64)}),
           "array 'weights' has shape")
    # a file of another model type where one is expected
    _fails(saved, "holds a model of type LCAConv2D, not LCA$", expected=LCA)
    _fails(saved, "not ConvEBM or MLPEBM", expected=(ConvEBM, "MLPEBM"))
    assert isinstance(load(saved, expected="LCAConv2D"), LCAConv2D)
    assert isinstance(load(saved, expected=(LCA, LCAConv2D)), LCAConv2D)
    with pytest.raises(ValueError, match="expected must name"):
        load(saved, expected=dict)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")


def test_atomic_write(saved, tmp_path, monkeypatch):
    before = saved.read_bytes()
    # a save that fails while writing leaves the previous file as it was, and no temporary file
    def broken(*args, **kwargs):
        args[0].write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        save(LCA(3, 4), saved)
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.npz"]
    assert isinstance(load(saved), LCAConv2D)
    # the path is used as given; folders are made
    path = save(LCA(2, 3), tmp_path / "sub" / "model.bin")
    assert path.endswith("model.bin") and isinstance(load(path), LCA)
    path = save(LCA(2, 3), tmp_path / "c.npz", compress=True)
    assert np.array_equal(_h(load(path).weights), _h(load(path).weights))


def test_root_exports():
    for name in ("save", "load", "ModelFileError", "LCASparseCoder", "LCADictionaryLearning",
                 "ConvLCADictionaryLearning"):
        assert name in sparsecoding.__all__ and name in dir(sparsecoding)
        assert getattr(sparsecoding, name) is not None
    assert issubclass(sparsecoding.ModelFileError, ValueError)
