import numpy as np

from sparsecoding.viz import save_dictionary, tile_dictionary


def test_tiles_place_each_atom(tmp_path):
    w = np.zeros((4, 1, 2, 2))
    w[2, 0, 1, 1] = 1.0  # atom 2: bottom-right pixel bright
    img = tile_dictionary(w, pad=1)
    assert img.shape == (7, 7)
    # atom 2 sits in row 1, column 0 of the 2x2 grid; its bright pixel maps to 1.0, zeros to 0.5
    assert img[1 + 3 + 1, 1 + 1] == 1.0 and img[1, 1] == 0.5
    assert save_dictionary(np.random.default_rng(0).standard_normal((6, 16)), tmp_path / "d.png", shape=(4, 4)).exists()
