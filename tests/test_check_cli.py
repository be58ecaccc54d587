"""``twinnets check SPEC.py``: the shipped example passes from the repository's root, as a user
of a fresh clone runs it; a port that parts exits 1 naming where; a broken spec (a missing
function, keys that do not fit, a loss that turns NaN, a file that does not load) is one line
and exit 2. Apart from the example, the specs are a small MLP's, edited."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    # its 4 batches an epoch, twice: its cosine schedule (stepped per epoch) moves once
    assert result["steps"] == 8 and result["dropout"] == "masks fed from numpy: drop"
    assert "CosineAnnealingLR stepped per epoch" in result["optimizer"]
    assert max(result["loss_max_rel_diff"], result["param_max_rel_diff"]) <= 1e-9


TINY = """
import numpy as np, optax, torch, jax.numpy as jnp
import torch.nn.functional as F
from flax import nnx


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.head(torch.tanh(self.norm(self.fc(x))))


class FlaxNet(nnx.Module):
    def __init__(self, rngs):
        self.fc = nnx.Linear(3, 4, rngs=rngs)
        self.norm = nnx.LayerNorm(4, epsilon=1e-5, rngs=rngs)
        self.head = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
        return self.head(jnp.tanh(self.norm(self.fc(x))))


def torch_model():
    return TorchNet()


def flax_model():
    return FlaxNet(nnx.Rngs(0))


def torch_loss(model, x, y):
    return F.mse_loss(model(x), y)


def flax_loss(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


def torch_optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=0.1)


def batches():
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((8, 3)), rng.standard_normal((8, 1))) for _ in range(2)]
"""


def spec_with(tmp_path, old, new, text=TINY):
    """A small spec with one edit, as a user's own file."""
    assert old in text
    path = tmp_path / "spec.py"
    path.write_text(text.replace(old, new))
    return path


def test_a_port_that_parts_exits_one_naming_where(cli, tmp_path):
    spec = spec_with(tmp_path, "epsilon=1e-5", "epsilon=1e-6")  # Flax's default eps
    code, out, err = cli("check", spec, "--json", "--no-progress")
    result = json.loads(out)
    assert code == 1 and not result["passed"], err
    first = result["first_divergence"]
    assert (first["step"], first["tensor"]) == (0, "output")
    assert "norm: eps 1e-05 vs epsilon 1e-06" in first["hint"] and "#trap-norm-eps" in first["hint"]
    code, out, _ = cli("check", spec_with(tmp_path, "", ""), "--no-progress")
    assert code == 0 and "check float64 lockstep over 2 steps: PASSED" in out


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
        ("lr=0.1", "lr=1e300", "loss became non-finite .* at step \\d"),
        (
            "from flax import nnx\n",
            "from flax import nnx\nraise ImportError('no nnx here')\n",
            "could not be loaded \\(ImportError: no nnx here\\)",
        ),
        ("return TorchNet()", "return TorchNet(7)", "torch_model\\(\\) raised TypeError"),
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


def test_a_spec_imports_the_modules_beside_it_wherever_it_runs(tmp_path):
    """The user's models in their own module, the spec beside it importing them; the command
    run from another folder."""
    models, _, rest = TINY.partition("def torch_model():")
    (tmp_path / "my_models.py").write_text(models)
    imports = (
        "import numpy as np, optax, torch, jax.numpy as jnp\nimport torch.nn.functional as F\n"
    )
    (tmp_path / "spec.py").write_text(
        imports + "from flax import nnx\nfrom my_models import FlaxNet, TorchNet\n\n\n"
        "def torch_model():" + rest
    )
    done = subprocess.run(
        [sys.executable, "-m", "compare", "check", str(tmp_path / "spec.py"), "--json"],
        cwd=ROOT / "docs",  # neither the repository's root nor the spec's folder
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["passed"]
