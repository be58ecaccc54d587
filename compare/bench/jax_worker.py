"""The JAX child: the tutorial's ``@nnx.jit`` step, one jitted pure step per iteration, and
the whole block as one ``lax.scan``."""

import functools

from compare.bench.adapters import adapter_for
from compare.bench.machine import cpu_name
from compare.bench.timing import loss_value, plan, run_variant
from compare.errors import CompareError


def jax_worker(task, opts):
    import jax
    from flax import nnx

    from compare import port
    from compare.toolkit.engine import DTYPES
    from compare.tutorials.twins import make_twins

    backend = jax.default_backend()
    if opts["device"] == "cuda" and backend != "gpu":
        raise CompareError(f"--device cuda: JAX runs on {backend}, not on a CUDA device")
    twins = make_twins(task, dtype=opts["dtype"], seed=opts["seed"])
    precision = set_jax_precision(opts["tf32"])
    hp, module = twins.hp, twins.jax_module
    full_batch = hp.batch_size is None
    batches, samples_per_step = plan(twins, opts)
    x, y = twins.jax_arrays["x"], twins.jax_arrays["y"]
    adapter = adapter_for(task)
    np_dtype = DTYPES[opts["dtype"]][0]

    def fresh():
        model = module.new_model(hp, nnx.Rngs(opts["seed"]))
        port.torch_to_nnx(twins.initial, model, dtype=np_dtype)
        model.train()
        return model, module.new_optimizer(model, hp)

    def sync(out):
        if out is not None:
            jax.block_until_ready(out)

    def build(loop):
        model, optimizer = fresh()
        run = loop(module, model, optimizer, x, y, batches, full_batch)

        def block():
            loss = run()
            return loss, nnx.state((model, optimizer))  # the last update awaited too

        return block

    results = {}
    loops = {
        "jax-nnx-jit": adapter.jax_nnx_jit,
        "jax-steps": adapter.jax_steps,
        "jax-scan": adapter.jax_scan,
    }
    for name, loop in loops.items():
        results[name] = run_variant(
            functools.partial(build, loop),
            sync,
            opts,
            len(batches),
            samples_per_step,
            lambda out: loss_value(out[0]),
        )
    device = jax.devices()[0]
    return {
        "variants": results,
        "device": device.device_kind if backend != "cpu" else f"cpu ({cpu_name()})",
        "device_kind": "cuda" if backend == "gpu" else backend,
        "precision": precision,
        "platform_version": getattr(device.client, "platform_version", "unknown"),
    }


def set_jax_precision(tf32):
    import jax

    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
    return {"jax_default_matmul_precision": jax.config.jax_default_matmul_precision}
