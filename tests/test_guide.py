"""docs/GUIDE.md's Python blocks, run in order in one namespace from the repository root: the
guide's worked example stays true."""

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_guides_python_runs():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "GUIDE.md").read_text(), re.S)
    assert len(blocks) >= 4
    namespace = {}
    here = os.getcwd()
    os.chdir(ROOT)
    try:
        for block in blocks:
            exec(compile(block, "docs/GUIDE.md", "exec"), namespace)  # noqa: S102
    finally:
        os.chdir(here)
    assert namespace["report"].passed
