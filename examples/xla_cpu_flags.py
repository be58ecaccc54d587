"""XLA:CPU's library paths (YNNPACK, XNNPACK, oneDNN) on the scanned training step, one core.

The step is the bench's ``jax-scan`` of mnist-cnn, mnist-resnet and dcgan (float32, precision
highest), lowered once and compiled once per setting, each setting given as a per-compile
option (``Lowered.compile(compiler_options)``: the debug option of the same name as the
``XLA_FLAGS`` flag), so every setting runs in one process, timed in turns. Per setting: how
many library fusions the compiled step holds (``__ynn_fusion`` / ``__xnn_fusion`` / oneDNN
calls), whether its result is bit for bit the default's (a setting whose executable is the
default's changes nothing, and its timing is the noise of the measurement), and its median
ms per step. The type names are the enum ``LIBRARY_FUSION_TYPE_*`` of jaxlib's
``xla/backends/cpu/*_fusion_options.proto`` (lower-case short names are refused as options).
docs/BENCHMARKS.md quotes it, run as

    taskset -c 0 python examples/xla_cpu_flags.py [TASK ...]
"""

import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from compare import port
from compare.bench.jax_worker import set_jax_precision
from compare.bench.timing import plan, time_in_turns
from compare.tutorials import registry
from compare.tutorials.twins import make_twins
from jaxnets import _train

TASKS = ["mnist-cnn", "mnist-resnet", "dcgan"]
REPEATS = 5


def _types(*names):
    return ",".join(f"LIBRARY_FUSION_TYPE_{n}" for n in names)


SETTINGS = {
    "default": {},
    "ynn: none": {"xla_cpu_experimental_ynn_fusion_type": ""},
    "ynn: individual convolution": {
        "xla_cpu_experimental_ynn_fusion_type": _types("INDIVIDUAL_CONVOLUTION")
    },
    "ynn: individual dot": {"xla_cpu_experimental_ynn_fusion_type": _types("INDIVIDUAL_DOT")},
    "ynn: dot, eltwise, reduce": {
        "xla_cpu_experimental_ynn_fusion_type": _types("DOT", "ELTWISE", "REDUCE")
    },
    "xnn: dot, eltwise, reduce": {
        "xla_cpu_experimental_xnn_fusion_type": _types("DOT", "ELTWISE", "REDUCE")
    },
    "xla_cpu_use_xnnpack": {"xla_cpu_use_xnnpack": True},
    "onednn: dot, eltwise, reduce": {
        "xla_cpu_experimental_onednn_fusion_type": _types("DOT", "ELTWISE", "REDUCE")
    },
}


def measure(name):
    task = registry.get(name)
    twins = make_twins(task, dtype="float32", seed=0)
    set_jax_precision(False)
    hp, module = twins.hp, twins.jax_module
    batches, _ = plan(twins, {"steps": None, "quick": False, "seed": 0})
    x, y = twins.jax_arrays["x"], twins.jax_arrays["y"]
    model = module.new_model(hp, nnx.Rngs(0))
    port.torch_to_nnx(twins.initial, model)
    model.train()
    graphdef, state = nnx.split((model, module.new_optimizer(model, hp)))
    index = jnp.asarray(np.stack(batches))
    lowered = _train._scan_batches.lower(module.train_step, graphdef, state, x, y, index)
    compiled, fusions = {}, {}
    for setting, options in SETTINGS.items():
        try:
            compiled[setting] = lowered.compile(options)
        except Exception as err:  # a name this jaxlib does not know
            print(f"{name}: {setting}: refused ({str(err).splitlines()[0][:120]})")
            continue
        text = compiled[setting].as_text()
        fusions[setting] = sum(text.count(k) for k in ("__ynn_fusion", "__xnn_fusion", "onednn"))
    # each executable's first call is its warm-up, and its result the one compared
    outputs = {k: jax.tree.leaves(f(state, x, y, index)) for k, f in compiled.items()}

    def run(f):
        return lambda: jax.block_until_ready(f(state, x, y, index))

    seconds = time_in_turns({k: run(f) for k, f in compiled.items()}, REPEATS)
    default = statistics.median(seconds["default"])
    print(f"\n{name}: {len(batches)} steps, ms per step (median of {REPEATS})")
    print("| setting | library fusions | result = default's | ms/step | default / it | spread |")
    print("| --- | ---: | :---: | ---: | ---: | ---: |")
    for setting, v in seconds.items():
        same = all(
            np.array_equal(a, b) for a, b in zip(outputs[setting], outputs["default"], strict=True)
        )
        median = statistics.median(v)
        print(
            f"| {setting} | {fusions[setting]} | {'yes' if same else 'no'} "
            f"| {median / len(batches) * 1e3:.2f} | {default / median:.2f} "
            f"| {(max(v) - min(v)) / median:.0%} |",
            flush=True,
        )


def main():
    torch.set_num_threads(1)
    print(
        f"jax {jax.__version__}, jaxlib {jax.lib.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    for name in sys.argv[1:] or TASKS:
        measure(name)


if __name__ == "__main__":
    main()
