"""How far a translated model's gradients are from torch's, beside torch's own rounding noise.

    python examples/gradients_against_torch_noise.py [NAME] [--input SHAPE] [--exact-hard-sigmoid]

For torchvision model NAME (float64, training mode, dropout off, ``torch.manual_seed(0)``):
the gradients of one cross-entropy step in torch (NCHW), in torch again in ``channels_last``
(other kernels, other summation orders: torch's own rounding noise) and in the twin
``compare.translate`` writes. A tensor whose JAX difference stands far above torch's own is a
semantic difference, not rounding: this is how mobilenet_v3_small's 3e-8 in every
squeeze-excitation gradient was told from noise (torch's float32 Hardsigmoid slope,
docs/PORTING.md). ``--exact-hard-sigmoid`` translates Hardsigmoid as ``jax.nn.hard_sigmoid``
(the rule before that was found) to show the difference again.
"""

import argparse
import copy

import jax
import numpy as np
import optax
import torch
import torchvision
from flax import nnx

import compare
from compare import port
from compare.diff import rel_diff
from compare.toolkit import translate


def gradients(model, x, y):
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss.item(), {k: p.grad.double().numpy().copy() for k, p in model.named_parameters()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", default="mobilenet_v3_small")
    parser.add_argument("--input", default="2,3,64,64")
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--exact-hard-sigmoid", action="store_true")
    args = parser.parse_args(argv)
    if args.exact_hard_sigmoid:
        translate.LEAVES[torch.nn.Hardsigmoid] = translate.Fn("jax.nn.hard_sigmoid({x})")
        translate.OPS["hardsigmoid"] = translate._unary("jax.nn.hard_sigmoid({x})")
    jax.config.update("jax_enable_x64", True)
    shape = tuple(int(s) for s in args.input.split(","))
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.name)(num_classes=10).double().train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0  # masks drawn by each side would hide everything else
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 10, (shape[0],), generator=generator)

    loss, torch_grads = gradients(copy.deepcopy(model), x, y)
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    _, own_grads = gradients(channels_last, x.to(memory_format=torch.channels_last), y)

    twin = compare.translate(copy.deepcopy(model), x).module
    twin = port.torch_to_nnx(model.state_dict(), twin, dtype=np.float64)
    x_nhwc = jax.numpy.asarray(x.numpy().transpose(0, 2, 3, 1))

    def jax_loss(m):
        logits = m(x_nhwc)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y.numpy()).mean()

    jax_loss_value, grads = nnx.value_and_grad(jax_loss)(twin)
    jax_grads = port.grads_from_nnx(twin, grads)

    whole = max(np.abs(g).max() for g in torch_grads.values())
    # tensors whose gradient is itself rounding level (a bias a BatchNorm absorbs) say nothing
    kept = [k for k, g in torch_grads.items() if np.abs(g).max() > 1e-10 * whole]
    print(f"loss: JAX {abs(float(jax_loss_value) - loss) / abs(loss):.1e} from torch")
    rows = sorted((rel_diff(np.asarray(jax_grads[k]), torch_grads[k]), k) for k in kept)
    print(f"{'gradient':50s} {'JAX vs torch':>13s} {'torch own':>10s}")
    for diff, key in rows[::-1][: args.top]:
        own = rel_diff(own_grads[key], torch_grads[key])
        print(f"{key:50s} {diff:13.1e} {own:10.1e}")
    worst_own = max(rel_diff(own_grads[k], torch_grads[k]) for k in kept)
    print(f"torch's own largest (channels_last against NCHW): {worst_own:.1e}")


if __name__ == "__main__":
    main()
