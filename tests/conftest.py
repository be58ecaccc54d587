"""Strict settings for the whole suite: mistakes that JAX or torch would let pass quietly fail.

- rank promotion raises: ``(n,) + (n, 1)`` silently makes an ``(n, n)`` matrix otherwise;
- float64 is enabled once, up front (the lockstep tier needs it; every array in the project
  is created with an explicit dtype, so float32 runs stay float32);
- matmuls at full precision on both sides, deterministic torch kernels;
- two JAX host devices on CPU, so data-parallel runs (``--data-parallel 2``) can shard in
  process; JAX's count is fixed when its backend starts. Everything else keeps running on
  the first device (measured: no change in the timings of the files it touches);
- under pytest-xdist (the default: one worker per core) each worker's torch takes its share
  of the cores, and so do the processes it starts: two workers each spinning two OpenMP
  threads on two cores run torch 10-15x slower.
"""

import os

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:  # before torch is imported; child processes inherit it
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _workers)))

import jax  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")
torch.use_deterministic_algorithms(True)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
if "OMP_NUM_THREADS" in os.environ:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def cli(capsys):
    """Run the command line in-process: returns (exit status, stdout, stderr)."""
    from compare.cli import main

    def call(*argv):
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call
