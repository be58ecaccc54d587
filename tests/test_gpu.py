"""GPU tier (``pytest -m gpu``): skipped unless both frameworks see a CUDA device.

On a GPU, matmuls and convolutions may run in TF32; parity is checked with it off (the
project's default for parity) and the drift with it on is reported, not bounded.
"""

import jax
import pytest
import torch

from compare.tutorials import parity

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or jax.default_backend() != "gpu",
        reason="needs a CUDA device for both torch and JAX",
    ),
]


@pytest.mark.parametrize("name", ["mnist-mlp", "mnist-cnn"])
def test_float64_parity_holds_on_the_gpu(name):
    result = parity.lockstep(name, dtype="float64", steps=50)
    assert result["passed"], result


def test_jax_picks_the_scan_on_gpu():
    from flax import nnx

    from jaxnets import _train, mnist_cnn

    assert not _train.scan_is_slower(mnist_cnn.Model(rngs=nnx.Rngs(0)))
