"""Strict settings for the whole suite: mistakes that JAX or torch would let pass quietly fail.

- rank promotion raises: ``(n,) + (n, 1)`` silently makes an ``(n, n)`` matrix otherwise;
- float64 is enabled once, up front (the lockstep tier needs it; every array in the project
  is created with an explicit dtype, so float32 runs stay float32);
- matmuls at full precision on both sides, deterministic torch kernels.
"""

import jax
import pytest
import torch

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")
torch.use_deterministic_algorithms(True)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


@pytest.fixture
def cli(capsys):
    """Run the command line in-process: returns (exit status, stdout, stderr)."""
    from compare.cli import main

    def call(*argv):
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call
