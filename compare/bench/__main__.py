"""The hidden child entry: ``python -m compare.bench --worker torch|jax TASK ...``."""

import argparse
import json
import sys
import traceback
from pathlib import Path

from compare.bench.jax_worker import jax_worker
from compare.bench.timing import one_line
from compare.bench.torch_worker import torch_worker
from compare.errors import CompareError
from compare.tutorials import registry


def worker_main(argv=None):
    """The hidden child entry: ``python -m compare.bench --worker torch|jax TASK ...``."""
    p = argparse.ArgumentParser(prog="python -m compare.bench")
    p.add_argument("--worker", choices=("torch", "jax"), required=True)
    p.add_argument("task")
    p.add_argument("--options", required=True, help="JSON")
    p.add_argument("--result", required=True, help="where to write the JSON result")
    args = p.parse_args(argv)
    opts = json.loads(args.options)
    try:
        task = registry.get(args.task)
        work = torch_worker if args.worker == "torch" else jax_worker
        result = work(task, opts)
        code = 0
    except CompareError as err:
        result, code = {"error": str(err)}, 2
    except Exception as err:
        if opts.get("debug"):
            traceback.print_exc()
        result, code = {"error": one_line(err)}, 1
    Path(args.result).write_text(json.dumps(result))
    return code


if __name__ == "__main__":
    sys.exit(worker_main())
