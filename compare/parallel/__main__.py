"""``python -m compare.parallel torch|jax TASK ...``: one rank of a data-parallel run, as
``launch`` starts it or as ``torchrun`` / a ``jax.distributed`` cluster does."""

import argparse
import sys

from compare.errors import CompareError
from compare.parallel.jax_mesh import jax_worker
from compare.parallel.torch_ddp import torch_worker


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m compare.parallel",
        description="one rank of a data-parallel run (torchrun, or jax.distributed processes)",
    )
    parser.add_argument("kind", choices=("torch", "jax"))
    parser.add_argument("task")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--hp", help="the hyperparameters as a JSON object (default: the task's)")
    parser.add_argument("--init-from")
    parser.add_argument("--data-dir")
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto")
    parser.add_argument("--out", required=True, help="rank 0 writes losses and weights (.npz)")
    parser.add_argument(
        "--time-repeats",
        type=int,
        default=0,
        help="bench (torch): time the schedule this many times after a warm-up; rank 0 "
        "writes the seconds instead",
    )
    parser.add_argument(
        "--full-batches-only",
        action="store_true",
        help="bench: the schedule without its short last batches",
    )
    args = parser.parse_args(argv)
    try:
        if args.kind == "torch":
            torch_worker(args)
        else:
            jax_worker(args)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
