"""Nothing is written inside the installed package: the numba cache lives in a user folder."""
import os
import subprocess
import sys

import sparsecoding

PACKAGE = os.path.dirname(os.path.abspath(sparsecoding.__file__))

# the numba kernel families: channels-first and channels-last im2col, pools, the fused LCA / FISTA
# updates. All kernels are compiled through the same cached decorator (ops/_jit.njit_cached); the
# heaviest ones (the LASSO path, conv coordinate descent: about 30 s of compilation each time on
# 2 cores) are left out of these two subprocesses to keep the suite's time, and are compiled once
# in-process by their own tests
RUN_KERNELS = """
import numpy as np
from sparsecoding.ops.conv import ConvOperator
from sparsecoding.ops.pool import max_pool, max_unpool
from sparsecoding.lca import LCA, LCAConv2D
from sparsecoding.ops import DenseOperator
from sparsecoding.solvers import fista
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
for layout in ("channels_first", "channels_last"):
    op = ConvOperator(w, (8, 8), 1, 1, layout=layout)
    xi = x if layout == "channels_first" else np.ascontiguousarray(np.moveaxis(x, 1, -1))
    y = op.forward(xi)
    op.adjoint(y), op.weight_grad(xi, y)
    p, idx = max_pool(y, 2, channels_last=layout == "channels_last")
    max_unpool(p, idx, (8, 8), channels_last=layout == "channels_last")
LCAConv2D(4, 3, kernel_size=3, lca_iters=5, seed=0)(x)
LCAConv2D(4, 3, kernel_size=3, lca_iters=5, seed=0, solver="fista")(x)
LCA(6, 10, lca_iters=5, seed=0)(rng.standard_normal((3, 10)).astype(np.float32))
D = DenseOperator(rng.standard_normal((6, 10)))
s = rng.standard_normal((3, 10))
fista(D, s, 0.1, max_iter=5)
"""

# one cached kernel is enough to show that an unwritable cache folder falls back to compiling in memory
ONE_KERNEL = """
import numpy as np
from sparsecoding.ops.conv import ConvOperator
w = np.ones((2, 1, 3, 3), dtype=np.float32)
print(ConvOperator(w, (6, 6), 1, 1, layout="channels_last").forward(np.ones((1, 6, 6, 1), np.float32)).sum())
"""


def _files_under(folder):
    out = set()
    for root, _, files in os.walk(folder):
        out.update(os.path.join(root, f) for f in files)
    return out


def _run(env_extra, script=RUN_KERNELS):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **env_extra)  # Python's own .pyc aside
    env.pop("NUMBA_CACHE_DIR", None)
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=600)


def test_kernels_write_nothing_inside_the_package(tmp_path):
    before = _files_under(PACKAGE)
    _run({"SPARSECODING_CACHE_DIR": str(tmp_path)})
    assert _files_under(PACKAGE) == before
    cached = _files_under(tmp_path / "numba")
    assert any(f.endswith(".nbi") for f in cached), "the numba cache went somewhere else"


def test_unwritable_cache_folder_compiles_in_memory(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    before = _files_under(PACKAGE)
    _run({"SPARSECODING_CACHE_DIR": str(blocker)}, ONE_KERNEL)
    assert _files_under(PACKAGE) == before
