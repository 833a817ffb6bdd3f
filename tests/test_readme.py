"""Every Python code block of the README runs as written, each in a new process (a user copies it into a file)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def _title(block):
    """The README section a block stands in (its test id)."""
    text = README.read_text()
    head = text[:text.index(block)].rsplit("\n## ", 1)[-1].split("\n", 1)[0]
    return re.sub(r"\W+", "-", head).strip("-").lower()


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[_title(b) for b in BLOCKS])
def test_readme_python_block_runs(tmp_path, block):
    script = tmp_path / "snippet.py"
    script.write_text(block)
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
