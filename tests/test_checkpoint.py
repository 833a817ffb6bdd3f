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
