"""``twinnets check SPEC.py``: the shipped example passes from the repository's root, as a user
of a fresh clone runs it; broken specs end in one line and exit 2; a port that parts, exit 1."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "sequence_classifier.py"


def test_the_example_spec_passes_from_the_repository_root():
    done = subprocess.run(
        [sys.executable, "-m", "compare", "check", "examples/sequence_classifier.py", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["passed"] and result["first_divergence"] is None
    assert result["spec"] == "examples/sequence_classifier.py" and result["dtype"] == "float64"
    assert result["steps"] == 4 and result["dropout"] == "masks fed from numpy: drop"
    assert max(result["loss_max_rel_diff"], result["param_max_rel_diff"]) <= 1e-9


def spec_with(tmp_path, old, new):
    """The example spec with one edit, as a user's own file."""
    text = EXAMPLE.read_text()
    assert old in text
    path = tmp_path / "spec.py"
    path.write_text(text.replace(old, new))
    return path


def test_a_port_that_parts_exits_one_naming_where(cli, tmp_path):
    spec = spec_with(tmp_path, "epsilon=1e-5", "epsilon=1e-6")  # Flax's default eps
    code, out, err = cli("check", spec, "--steps", "2", "--json")
    result = json.loads(out)
    assert code == 1 and not result["passed"], err
    first = result["first_divergence"]
    assert (first["step"], first["tensor"]) == (0, "output")
    assert "norm: eps 1e-05 vs epsilon 1e-06" in first["hint"] and "#trap-norm-eps" in first["hint"]


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("def flax_loss(", "def flax_cost(", "defines no flax_loss\\(\\)"),
        (
            "self.head = nnx.Linear",
            "self.classifier = nnx.Linear",
            "flax_model: missing keys \\['classifier.bias', 'classifier.weight'\\]; "
            "unexpected keys \\['head.bias', 'head.weight'\\]",
        ),
        ("lr=3e-3", "lr=1e300", "loss became non-finite .* at step \\d"),
        (
            "import optax\n",
            "import optax\nraise ImportError('no optax here')\n",
            "could not be loaded",
        ),
        (
            "return TorchClassifier()",
            "return TorchClassifier(7)",
            "torch_model\\(\\) raised TypeError",
        ),
    ],
    ids=["missing-function", "keys-do-not-fit", "nan-loss", "import-error", "raising-builder"],
)
def test_a_broken_spec_is_one_line_and_exit_two(cli, tmp_path, old, new, message):
    import re

    code, out, err = cli("check", spec_with(tmp_path, old, new), "--steps", "2", "--no-progress")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err


def test_a_missing_spec_file_is_one_line(cli, tmp_path):
    code, _, err = cli("check", tmp_path / "absent.py")
    assert code == 2 and err == f"error: {tmp_path / 'absent.py'}: no such file\n"
