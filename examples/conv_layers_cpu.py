"""Each convolution of mnist-cnn, mnist-resnet and dcgan, forward and backward, three ways.

JAX with ``jaxnets.layers``' convolution (``jaxnets/_conv.py``, what the tutorials use), JAX
with lax's own convolution (both jitted, outside any loop), and torch eager; float32, one
thread, milliseconds per call (the mean of 20 after a warm-up). The loss is the sum of squares
of the output; both sides take the gradient with respect to the input and the kernel. Then
the MNIST nets' 2x2 max poolings and resnet18's 3x3 stride-2 one the same three ways:
``jaxnets.layers.max_pool`` (``jaxnets/_pool.py``), ``nnx.max_pool`` (``reduce_window``) and
torch's ``max_pool2d``.
docs/BENCHMARKS.md quotes it, run as

    taskset -c 0 python examples/conv_layers_cpu.py
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from jax import lax

from jaxnets import layers

NHWC = ("NHWC", "HWIO", "NHWC")

# (name, batch, input (h, w, c), torch layer); ConvTranspose2d: the generator's
LAYERS = [
    ("mnist-cnn conv1 5x5 1->10", 64, (28, 28, 1), torch.nn.Conv2d(1, 10, 5)),
    ("mnist-cnn conv2 5x5 10->20", 64, (12, 12, 10), torch.nn.Conv2d(10, 20, 5)),
    ("mnist-resnet conv1 5x5 1->16", 64, (28, 28, 1), torch.nn.Conv2d(1, 16, 5)),
    ("mnist-resnet rblock1 3x3 16", 64, (12, 12, 16), torch.nn.Conv2d(16, 16, 3, 1, 1)),
    ("mnist-resnet conv2 5x5 16->32", 64, (12, 12, 16), torch.nn.Conv2d(16, 32, 5)),
    ("mnist-resnet rblock2 3x3 32", 64, (4, 4, 32), torch.nn.Conv2d(32, 32, 3, 1, 1)),
    ("dcgan D 4x4 s2 1->16", 100, (28, 28, 1), torch.nn.Conv2d(1, 16, 4, 2, 1, bias=False)),
    ("dcgan D 4x4 s2 16->32", 100, (14, 14, 16), torch.nn.Conv2d(16, 32, 4, 2, 1, bias=False)),
    ("dcgan D 7x7 32->1", 100, (7, 7, 32), torch.nn.Conv2d(32, 1, 7, bias=False)),
    (
        "dcgan G 7x7 100->32 (T)",
        100,
        (1, 1, 100),
        torch.nn.ConvTranspose2d(100, 32, 7, 1, 0, bias=False),
    ),
    (
        "dcgan G 4x4 s2 32->16 (T)",
        100,
        (7, 7, 32),
        torch.nn.ConvTranspose2d(32, 16, 4, 2, 1, bias=False),
    ),
    (
        "dcgan G 4x4 s2 16->1 (T)",
        100,
        (14, 14, 16),
        torch.nn.ConvTranspose2d(16, 1, 4, 2, 1, bias=False),
    ),
]


# (name, batch, input (h, w, c)): MaxPool2d(2)'s inputs
# (name, batch, input (h, w, c), window, stride, padding)
POOLS = [
    ("mnist-cnn pool1 2x2", 64, (24, 24, 10), 2, 2, 0),
    ("mnist-cnn pool2 2x2", 64, (8, 8, 20), 2, 2, 0),
    ("mnist-resnet pool1 2x2", 64, (24, 24, 16), 2, 2, 0),
    ("mnist-resnet pool2 2x2", 64, (8, 8, 32), 2, 2, 0),
    # torchvision's resnet18 on batches of 32 3x32x32 images (examples/vision_speed_cpu.py)
    ("resnet18 maxpool 3x3 s2 p1", 32, (16, 16, 64), 3, 2, 1),
]


def _ms(call, n=20):
    call()
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n * 1e3


def _jax_ms(f, *args):
    f = jax.jit(f)
    return _ms(lambda: jax.block_until_ready(f(*args)))


def _grads(conv):
    return jax.grad(lambda x, w: (conv(x, w) ** 2).sum(), (0, 1))


def main():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"{'layer':32s} {'JAX _conv':>10s} {'JAX lax':>10s} {'torch':>10s}  (ms)")
    for name, batch, shape, layer in LAYERS:
        x = jnp.asarray(rng.normal(size=(batch, *shape)), jnp.float32)
        k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
        w = jnp.asarray(layer.weight.detach().numpy().transpose(2, 3, 1, 0))
        if isinstance(layer, torch.nn.ConvTranspose2d):
            q = ((k - 1 - p, k - 1 - p),) * 2  # torch's padding p, as dcgan.py spells it

            def ours(x, w, s=s, q=q):
                return layers.conv_transpose(x, w, (s, s), q, None, NHWC, True)

            def theirs(x, w, s=s, q=q):
                return lax.conv_transpose(x, w, (s, s), q, None, NHWC, True)
        else:

            def ours(x, w, s=s, p=p):
                return layers.conv_general_dilated(
                    x, w, (s, s), ((p, p),) * 2, dimension_numbers=NHWC
                )

            def theirs(x, w, s=s, p=p):
                return lax.conv_general_dilated(x, w, (s, s), ((p, p),) * 2, dimension_numbers=NHWC)

        x_torch = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2), requires_grad=True)

        def torch_step(layer=layer, x_torch=x_torch):
            layer.zero_grad()
            x_torch.grad = None
            (layer(x_torch) ** 2).sum().backward()

        print(
            f"{name:32s} {_jax_ms(_grads(ours), x, w):10.2f} {_jax_ms(_grads(theirs), x, w):10.2f}"
            f" {_ms(torch_step):10.2f}",
            flush=True,
        )
    print(f"{'pooling':32s} {'JAX _pool':>10s} {'JAX nnx':>10s} {'torch':>10s}  (ms)")
    for name, batch, shape, k, s, p in POOLS:
        x = jnp.asarray(rng.normal(size=(batch, *shape)), jnp.float32)

        def loss(x, pool, k=k, s=s, p=p):
            return (pool(x, (k, k), (s, s), ((p, p), (p, p))) ** 2).sum()

        ms = [
            _jax_ms(jax.grad(lambda x, pool=pool: loss(x, pool)), x)
            for pool in (layers.max_pool, nnx.max_pool)
        ]
        x_torch = torch.tensor(np.asarray(x).transpose(0, 3, 1, 2), requires_grad=True)

        def torch_pool(x_torch=x_torch, k=k, s=s, p=p):
            x_torch.grad = None
            (torch.nn.functional.max_pool2d(x_torch, k, s, p) ** 2).sum().backward()

        print(f"{name:32s} {ms[0]:10.2f} {ms[1]:10.2f} {_ms(torch_pool):10.2f}", flush=True)


if __name__ == "__main__":
    main()
