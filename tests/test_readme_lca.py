"""The README's "lca-pytorch users" section: its snippet runs, and its migration table names every
lca-pytorch constructor argument, method and return variable (lists written from lca-pytorch's lcapt/lca.py,
lcapt/metric.py, lcapt/analysis.py and lcapt/preproc.py)."""
import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

LCAPT_ARGUMENTS = ["out_neurons", "in_neurons", "result_dir", "kernel_size", "stride", "lambda_", "tau", "eta",
                   "lca_iters", "pad", "return_vars", "return_all_ts", "nonneg", "track_metrics", "transfer_func",
                   "input_zero_mean", "input_unit_var", "cudnn_benchmark", "d_update_clip", "lr_schedule", "req_grad",
                   "weight_init", "no_time_pad"]
LCAPT_METHODS = ["forward", "encode", "compute_input_drive", "compute_recon", "compute_recon_error",
                 "compute_lateral_connectivity", "lateral_competition", "transfer", "compute_weight_update",
                 "update_weights", "normalize_weights", "assign_weight_values", "get_weights",
                 "compute_frac_active", "compute_l1_sparsity", "compute_l2_error", "compute_times_active_by_feature",
                 "make_feature_grid", "make_zero_mean", "make_unit_var"]
LCAPT_RETURN_VARS = ["inputs", "input_drives", "states", "acts", "recons", "recon_errors", "conns"]


def _section():
    text = README.read_text()
    start = text.index("## lca-pytorch users")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_snippet_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", _section(), flags=re.S)
    assert blocks, "no python snippet in the lca-pytorch section"
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    namespace = {}
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "README.md (lca-pytorch users)", "exec"), namespace)
    acts, errors = namespace["acts"], namespace["errors"]
    assert acts.shape == (8, 64, 16, 16) and errors.shape == (8, 3, 32, 32)
    assert out.getvalue().strip().endswith("(90, 90, 3)")
    assert not (tmp_path / "lca_results").exists()


@pytest.mark.parametrize("name", LCAPT_ARGUMENTS + LCAPT_METHODS + LCAPT_RETURN_VARS)
def test_migration_table_names_everything(name):
    table = [line for line in _section().splitlines() if line.startswith("|")]
    assert any(re.search(rf"(?<!\w){name}\b", line.split("|")[1]) for line in table[2:]), name


def test_migration_table_names_the_intended_differences():
    section = _section()
    for phrase in ("exact at the borders", "TypeError", "ValueError", "ddof=1", "5-D", "T(u_{t-1})"):
        assert phrase in section, phrase
