"""The torch child: eager, ``torch.compile`` and CUDA graphs, then the lesson as written."""

import copy
import tempfile

from compare.bench.adapters import adapter_for
from compare.bench.lessons import lesson_block
from compare.bench.machine import cpu_name
from compare.bench.timing import loss_value, plan, run_variant
from compare.errors import CompareError


def torch_worker(task, opts):
    import torch

    from compare.tutorials.twins import make_twins

    if opts["device"] == "cuda" and not torch.cuda.is_available():
        raise CompareError("--device cuda: torch sees no CUDA device")
    cuda = opts["device"] == "cuda" or (opts["device"] == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    twins = make_twins(task, dtype=opts["dtype"], seed=opts["seed"])
    precision = set_torch_precision(opts["tf32"])
    hp, module = twins.hp, twins.torch_module
    full_batch = hp.batch_size is None
    batches, samples_per_step = plan(twins, opts)
    x = twins.torch_arrays["x"].to(device)
    y = twins.torch_arrays["y"].to(device)
    adapter = adapter_for(task)
    args = adapter.torch_batches(x, y, batches, full_batch)

    def sync(_):
        if cuda:
            torch.cuda.synchronize(device)

    def fresh():  # the common initial weights, a new optimizer: every variant starts alike
        model = copy.deepcopy(twins.torch_model).to(device)
        model.train()
        optimizer = module.new_optimizer(model, hp)
        if hasattr(module, "start_epoch"):  # the lesson's learning rate for epoch 0, which
            module.start_epoch(optimizer, 0, hp)  # optax's schedule holds from step 0
        return model, optimizer

    def stepper(step, mark=False):
        model, optimizer = fresh()
        if mark:
            prime(adapter.torch_step(module), model, optimizer, args[0])

        def block():
            loss = None
            for batch in args:
                if mark:  # a new iteration: earlier outputs may be overwritten by the replay
                    torch.compiler.cudagraph_mark_step_begin()
                loss = step(model, optimizer, *batch)
            return loss

        return block

    def compiled(mode=None):
        from torch._dynamo.utils import counters

        torch._dynamo.reset()  # its own compilation, timed in its own warm-up
        counters.clear()
        step = adapter.torch_compiled(module, mode=mode)
        return stepper(step, mark=mode == "reduce-overhead")

    results = {}
    builders = {
        "torch-eager": lambda: stepper(adapter.torch_step(module)),
        "torch-compile": lambda: compiled(),
        "torch-cudagraphs": lambda: compiled("reduce-overhead"),
    }
    for name, build in builders.items():
        if name == "torch-cudagraphs" and not cuda:
            results[name] = {"status": "skipped", "reason": "CUDA graphs need a CUDA device"}
            continue
        results[name] = run_variant(
            build,
            sync,
            opts,
            len(args),
            samples_per_step,
            lambda out: loss_value(out.cpu()),
            extra=_dynamo_counts if name != "torch-eager" else None,
        )
    with tempfile.TemporaryDirectory(prefix="bench-lesson-") as tmp:
        results["lesson"] = run_variant(
            lambda: lesson_block(twins, adapter, fresh, device, len(batches), opts, tmp),
            sync,
            opts,
            len(batches),
            samples_per_step,
            lambda out: out,
        )
    return {
        "variants": results,
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({cpu_name()})",
        "device_kind": "cuda" if cuda else "cpu",
        "precision": precision,
        "threads": torch.get_num_threads(),
        "dataset": twins.dataset,
        "batch_size": hp.batch_size,
        "samples_per_step": samples_per_step,
        "steps": len(batches),
    }


def prime(step, model, optimizer, batch):
    """One eager step before CUDA graphs record any. An optimizer may create its state inside
    its first step (SGD's momentum buffers come from ``clone(grad)``); made inside a recorded
    graph, that state is the graph's output, and the next replay overwrites it while the
    optimizer still holds it ("accessing tensor output of CUDAGraphs that has been overwritten
    by a subsequent run", seen on an H200 with torch 2.11). Made eagerly, it is ordinary
    memory, which Dynamo keeps at a static address. The step is a training step like the
    others: the variant's blocks go on from there."""
    step(model, optimizer, *batch)


def set_torch_precision(tf32):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    return {
        "torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "torch.backends.cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "torch.get_float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def _dynamo_counts():
    """What torch.compile made of the step: graphs, graph breaks, CUDA graph skips (each skip
    is logged with its reason under ``TORCH_LOGS=cudagraphs``)."""
    from torch._dynamo.utils import counters

    return {
        "compiled_graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "cudagraph_skips": int(counters["inductor"]["cudagraph_skips"]),
    }
