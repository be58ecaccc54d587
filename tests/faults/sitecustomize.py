"""Faults for tests/test_parallel.py, planted in the torch ranks the launcher starts.

Python imports ``sitecustomize`` at start-up from its path; a test puts this folder on the
ranks' PYTHONPATH and names the fault in ``TWINNETS_FAULT``, so that the production code has
no test hooks:

- ``exit:R:S``: rank R exits (status 3) at its training step S (counted from 0);
- ``never-joins:R``: rank R exits (status 4) before joining the process group;
- ``ddp-average``: DDP's own gradient average (no comm hook), wrong for uneven slices.
"""

import os

FAULT = os.environ.get("TWINNETS_FAULT", "")
RANK = os.environ.get("RANK")

if FAULT and RANK is not None:
    import torch.distributed
    from torch.nn.parallel import DistributedDataParallel

    kind, _, where = FAULT.partition(":")
    if kind == "exit" and where.split(":")[0] == RANK:
        step = int(where.split(":")[1])
        forward = DistributedDataParallel.forward
        calls = []

        def dying_forward(self, *args, **kwargs):  # one forward pass per training step
            if len(calls) == step:
                os._exit(3)
            calls.append(step)
            return forward(self, *args, **kwargs)

        DistributedDataParallel.forward = dying_forward
    elif kind == "never-joins" and where == RANK:

        def never_joins(*args, **kwargs):
            os._exit(4)

        torch.distributed.init_process_group = never_joins
    elif kind == "ddp-average":
        DistributedDataParallel.register_comm_hook = lambda self, state, hook: None
