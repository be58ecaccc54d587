"""Where the scanned JAX training step's time goes on one CPU core: an ablation per task.

The step is the bench's ``jax-scan`` (``jaxnets.train_epoch(loop="scan")`` over the block
of full batches ``python -m compare bench`` times, float32, precision highest). Each row is
the same step with one kind of layer swapped for a stand-in that costs next to nothing (the
same output shape, a gradient to every parameter and input: a mean of the input times the
kernel's sum, broadcast; for pooling a strided slice; for BatchNorm a scale and a shift; for
the optimizer a stateless SGD), so the time it saves is what that kind of layer costs in the
step, forward and backward (then each convolution alone, named by its path in the model);
"the rest" is the step with every stand-in at once (the linear layers, activations, loss,
the scan itself). For the pooling nets a row more: the step with
``nnx.max_pool`` (``reduce_window``, what the tutorials pooled with before
``jaxnets/_pool.py``) in place of ``jaxnets.layers.max_pool``, and for each net the step
with its single-channel first convolution as patches and one matmul. The variants are compiled
first and then timed in turns (median of the repeats), so that a shared machine's load
falls on all of them alike. docs/BENCHMARKS.md quotes it, run as

    taskset -c 0 python examples/step_profile_cpu.py [TASK ...]
"""

import functools
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax
import torch
from flax import nnx

from compare import port
from compare.bench.adapters import adapter_for
from compare.bench.jax_worker import set_jax_precision
from compare.bench.timing import plan, time_in_turns
from compare.tutorials import registry
from compare.tutorials.twins import make_twins
from jaxnets import _conv, layers

TASKS = ["mnist-cnn", "mnist-resnet", "dcgan"]
REPEATS = 5


def _cheap(x, kernel, bias, shape):
    # next to nothing, with the shape of the real output and a gradient to everything
    y = x.mean(axis=tuple(range(1, x.ndim)), keepdims=True) * kernel.sum()
    if bias is not None:
        y = y + bias
    return jnp.broadcast_to(y, shape)


def _stand_in(real):
    """A subclass of ``real`` (nnx.Conv, ConvTranspose) whose call costs next to nothing."""

    class StandIn(real):
        def __call__(self, x):
            shape = jax.eval_shape(lambda x: real.__call__(self, x), x).shape
            bias = self.bias[...] if self.bias is not None else None
            return _cheap(x, self.kernel[...], bias, shape)

    return StandIn


def _patches_conv(lhs, rhs, window_strides, padding, *args, precision=None, **kwargs):
    """A single-channel convolution as its patches (one strided slice per kernel pixel) and one
    matmul: what was tried for the nets' first layer (not kept: see the table)."""
    (kh, kw, _, out_features), (sh, sw) = rhs.shape, window_strides
    if padding != "VALID":
        lhs = jnp.pad(lhs, [(0, 0), *padding, (0, 0)])
    ho, wo = (lhs.shape[1] - kh) // sh + 1, (lhs.shape[2] - kw) // sw + 1
    patches = jnp.concatenate(
        [
            lhs[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :]
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    )  # (batch, ho, wo, kh * kw)
    return jnp.dot(patches, rhs.reshape(kh * kw, out_features), precision=precision)


def _first_conv(model):
    # the single-channel convolution the input meets first
    for _, node in nnx.iter_graph(model):
        if type(node) is nnx.Conv and node.in_features == 1:
            return node
    return None


class _AffineOnly(layers.BatchNorm):
    def __call__(self, x):
        return x * self.scale[...] + self.bias[...]


def _swap(model, real, replacement, at=None):
    # every layer of type ``real``, or only the one at path ``at``
    for path, node in nnx.iter_graph(model):
        if type(node) is real and at in (None, path):
            node.__class__ = replacement


def _pooling_attr(model):
    return next((a for a in ("pooling", "mp") if hasattr(model, a)), None)


def _ablations(model):
    """(name, how to change a fresh model) for the layers ``model`` holds."""
    kinds = {type(node) for _, node in nnx.iter_graph(model)}
    rows = []
    for kind, name in [
        (nnx.Conv, "convolutions"),
        (_conv.ConvTranspose, "transposed convolutions"),
    ]:
        if kind not in kinds:
            continue
        stand_in = _stand_in(kind)
        rows.append((name, lambda m, kind=kind, stand_in=stand_in: _swap(m, kind, stand_in)))
        # then each layer alone: which of them the time is in
        for path, node in nnx.iter_graph(model):
            if type(node) is kind:
                rows.append(
                    (
                        "- " + ".".join(map(str, path)),
                        lambda m, kind=kind, stand_in=stand_in, path=path: _swap(
                            m, kind, stand_in, path
                        ),
                    )
                )
    if _pooling_attr(model):

        def strided(m):
            setattr(m, _pooling_attr(m), lambda x: x[:, ::2, ::2, :])

        rows.append(("max pooling", strided))
    if layers.BatchNorm in kinds:
        rows.append(("BatchNorm", lambda m: _swap(m, layers.BatchNorm, _AffineOnly)))
    return rows


def _plain_sgd(module, hp):
    """The task's optimizer with its state (momentum, Adam's moments) left out."""
    if module.__name__.endswith("dcgan"):
        return lambda model, hp: nnx.Dict(
            {
                "D": nnx.Optimizer(model.D, optax.sgd(hp.lr), wrt=nnx.Param),
                "G": nnx.Optimizer(model.G, optax.sgd(hp.lr), wrt=nnx.Param),
            }
        )
    return lambda model, hp: nnx.Optimizer(model, optax.sgd(hp.lr), wrt=nnx.Param)


def profile(name):
    task = registry.get(name)
    twins = make_twins(task, dtype="float32", seed=0)
    set_jax_precision(False)
    hp, module = twins.hp, twins.jax_module
    batches, _ = plan(twins, {"steps": None, "quick": False, "seed": 0})
    x, y = twins.jax_arrays["x"], twins.jax_arrays["y"]
    adapter = adapter_for(task)

    def build(change=None, new_optimizer=module.new_optimizer):
        model = module.new_model(hp, nnx.Rngs(0))
        port.torch_to_nnx(twins.initial, model)
        model.train()
        if change:
            change(model)
        run = adapter.jax_scan(module, model, new_optimizer(model, hp), x, y, batches, False)
        return lambda: jax.block_until_ready((run(), nnx.state(model)))

    ablations = _ablations(module.new_model(hp, nnx.Rngs(0)))
    variants = {"the step": build()}
    for kind, change in ablations:
        variants[kind] = build(change)
    variants["optimizer state"] = build(new_optimizer=_plain_sgd(module, hp))

    def everything(m):
        for kind, change in ablations:
            if not kind.startswith("- "):
                change(m)

    variants["the rest"] = build(everything, _plain_sgd(module, hp))
    pooling = _pooling_attr(module.new_model(hp, nnx.Rngs(0)))
    if pooling:
        nnx_pool = functools.partial(nnx.max_pool, window_shape=(2, 2), strides=(2, 2))
        variants["step, nnx.max_pool"] = build(lambda m: setattr(m, pooling, nnx_pool))
    if _first_conv(module.new_model(hp, nnx.Rngs(0))) is not None:
        variants["step, first conv as patches"] = build(
            lambda m: setattr(_first_conv(m), "conv_general_dilated", _patches_conv)
        )
    for run in variants.values():
        run()  # compile and warm up
    seconds = time_in_turns(variants, REPEATS)
    ms = {k: statistics.median(v) / len(batches) * 1e3 for k, v in seconds.items()}
    spread = max((max(v) - min(v)) / statistics.median(v) for v in seconds.values())
    step = ms["the step"]
    print(f"\n{name}: {len(batches)} steps of batch {hp.batch_size}, ms per step")
    print(f"| {'what':34s} | {'ms/step':>8s} | {'its cost':>8s} | {'share':>6s} |")
    print(f"| {'-' * 34} | {'-' * 7}: | {'-' * 7}: | {'-' * 5}: |")
    print(f"| {'the step (jax-scan)':34s} | {step:8.2f} | {'':8s} | {'100 %':>6s} |")
    for kind in [k for k in ms if k != "the step" and not k.startswith("step, ")]:
        cost = step - ms[kind] if kind != "the rest" else ms[kind]
        label = f"{kind} (stood in)" if kind != "the rest" else "the rest (all stood in)"
        label = f"{kind[2:]} alone (stood in)" if kind.startswith("- ") else label
        print(f"| {label:34s} | {ms[kind]:8.2f} | {cost:8.2f} | {cost / step:6.0%} |")
    # these two: their time over the step's (above 1: slower than the tutorials' step)
    for kind, label in [
        ("step, nnx.max_pool", "the step with nnx.max_pool"),
        ("step, first conv as patches", "the step, 1st conv as patches"),
    ]:
        if kind in ms:
            print(f"| {label:34s} | {ms[kind]:8.2f} | {'':8s} | {ms[kind] / step:5.2f}x |")
    print(f"(largest spread of a variant's {REPEATS} repeats: {spread:.0%})", flush=True)


def main():
    torch.set_num_threads(1)
    print(
        f"jax {jax.__version__}, jaxlib {jax.lib.__version__}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    for name in sys.argv[1:] or TASKS:
        profile(name)


if __name__ == "__main__":
    main()
