import numpy as np

from sparsecoding.checkpoint import load_checkpoint, save_checkpoint


def test_roundtrip_and_atomic_replace(tmp_path):
    path = tmp_path / "sub" / "ck.npz"
    save_checkpoint(path, {"w": np.arange(3.0)}, {"step": 1, "hist": [1.5]})
    save_checkpoint(path, {"w": np.arange(4.0)}, {"step": 2, "hist": [1.5, 2.5]})
    arrays, meta = load_checkpoint(path)
    np.testing.assert_array_equal(arrays["w"], np.arange(4.0))
    assert meta == {"step": 2, "hist": [1.5, 2.5]}
    assert [p.name for p in path.parent.iterdir()] == ["ck.npz"]


def test_named_parameters_key_the_checkpoint(tmp_path):
    import pytest

    from sparsecoding.checkpoint import named_pairs, pack_optimizer, pack_params, unpack_optimizer, unpack_params
    from sparsecoding.optim import Adam

    W, b = np.arange(6.0).reshape(2, 3), np.zeros(2)
    params = {"W": W, "b": b}
    opt = Adam(params, lr=0.1)
    opt.step({"W": np.ones((2, 3)), "b": np.ones(2)})
    arrays = pack_params(params, {})
    state = pack_optimizer(opt, arrays)
    assert sorted(arrays) == ["W", "b", "opt_m_W", "opt_m_b", "opt_v_W", "opt_v_b"]
    assert not np.shares_memory(arrays["W"], W)  # host copies
    save_checkpoint(tmp_path / "ck.npz", arrays, {"optimizer": state})
    arrays, meta = load_checkpoint(tmp_path / "ck.npz")
    W2, b2 = np.zeros((2, 3)), np.ones(2)
    opt2 = Adam({"b": b2, "W": W2}, lr=0.5)
    unpack_params({"b": b2, "W": W2}, arrays)
    unpack_optimizer(opt2, arrays, meta["optimizer"])
    np.testing.assert_array_equal(W2, W)
    np.testing.assert_array_equal(opt2.m[1], opt.m[0])
    assert opt2.lr == [0.1, 0.1] and opt2.t == 1
    with pytest.raises(ValueError, match=r"W has shape \(2, 3\) in the state, the parameter's is \(3, 2\)"):
        unpack_params({"b": b2, "W": np.zeros((3, 2))}, arrays)
    with pytest.raises(ValueError, match="no 'c' array"):
        unpack_params({"c": b2}, arrays)
    # a stack of layers is named W<k> / b<k>, as the checkpoints of the layer stacks always were
    pairs = [(W, b), (W.T.copy(), np.ones(3))]
    assert list(named_pairs(pairs)) == ["W0", "b0", "W1", "b1"]
    assert sorted(pack_params(pairs, {})) == ["W0", "W1", "b0", "b1"]


def test_optimiser_state_without_names_loads_by_position():
    # checkpoints written before the optimisers had named parameters: buffers opt_<buffer>_<i>
    from sparsecoding.checkpoint import unpack_optimizer
    from sparsecoding.optim import SGD

    arrays = {"opt_velocity_0": np.full(2, 3.0), "opt_velocity_1": np.full(1, 4.0)}
    state = {"t": 5, "lr": [0.1, 0.2], "buffers": {"velocity": 2}}
    opt = SGD({"w": np.ones(2), "b": np.ones(1)}, lr=0.0, momentum=0.9)
    unpack_optimizer(opt, arrays, state)
    np.testing.assert_array_equal(opt.velocity[1], [4.0])
    assert opt.t == 5 and opt.lr == [0.1, 0.2]


def test_atomic_files_get_the_permissions_of_an_ordinary_file(tmp_path):
    # the temporary file mkstemp makes is private; the written file must follow the umask like open() does
    import os  # noqa: PLC0415

    from sparsecoding.checkpoint import atomic_savez  # noqa: PLC0415

    old = os.umask(0o022)
    try:
        atomic_savez(tmp_path / "a.npz", {"x": np.zeros(2)})
        with open(tmp_path / "b.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    mode = os.stat(tmp_path / "a.npz").st_mode & 0o777
    assert mode == os.stat(tmp_path / "b.txt").st_mode & 0o777 == 0o644
