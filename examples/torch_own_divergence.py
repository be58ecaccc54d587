"""How far torch lands from itself after a few float64 steps: the noise ``check`` allows.

    python examples/torch_own_divergence.py NAME --input 4,3,128,128 [--input ...] [--lr 0.01]

For torchvision model NAME (``num_classes=10``, training mode, ``torch.manual_seed(0)``;
dropout and stochastic depth off, as ``check`` feeds both sides one mask), ``--steps`` SGD
steps (momentum 0.9) in float64 on ``twinnets translate --check``'s default batches and loss,
from the weights and again from the weights nudged by one rounding step (``check``'s own
reference). It prints, per input size, the losses, the last loss's relative difference and the
largest per-tensor relative difference of the parameters (``compare.diff.rel_diff``; tensors
whose values are all below 1e-12 are left out: a bias a BatchNorm cancels holds rounding
noise only), with the tensors that part most. Where that figure stands above 1e-10, a check
with ``check``'s factor of 10 cannot hold the twin to 1e-9: torch itself does not agree with
itself that closely (docs/TRANSLATE.md, the chaotic rows). Torch only, one thread.
"""

import argparse

import torch
import torchvision

from compare.diff import rel_diff
from compare.toolkit import check
from compare.toolkit.translate import default_batches, default_losses

QUIET = {  # what check would otherwise meet as noise it feeds: dropout, stochastic depth
    "mobilenet_v2": {"dropout": 0.0},
    "efficientnet_b0": {"stochastic_depth_prob": 0.0, "dropout": 0.0},
    "convnext_tiny": {"stochastic_depth_prob": 0.0},
}


def train(model, optimizer, batches, loss_fn):
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        loss = loss_fn(model, torch.from_numpy(x), torch.from_numpy(y))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def divergence(name, shape, steps, lr, top):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10, **QUIET.get(name, {})).train()
    example = (torch.randn(*shape),)
    batches = default_batches(model, example, steps, 0)
    loss_fn, _ = default_losses(model, example)
    model = model.double()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    (nudged, nudged_optimizer, _), _ = check._reference(model, optimizer, None, "float64", 0)
    losses = train(model, optimizer, batches, loss_fn)
    nudged_losses = train(nudged, nudged_optimizer, batches, loss_fn)
    theirs = dict(nudged.named_parameters())
    rows = sorted(
        (
            (rel_diff(p.detach().numpy(), theirs[k].detach().numpy()), k)
            for k, p in model.named_parameters()
            if p.detach().abs().max() > 1e-12
        ),
        reverse=True,
    )
    print(f"{name} {','.join(map(str, shape))}, {steps} steps at lr {lr}")
    print(f"  losses {' '.join(f'{v:.4g}' for v in losses)}")
    print(f"  loss {rel_diff(nudged_losses[-1], losses[-1]):.1e}, parameters {rows[0][0]:.1e}")
    for diff, k in rows[:top]:
        print(f"    {diff:.1e} {k}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(n for n in dir(torchvision.models) if n.islower()))
    parser.add_argument(
        "--input", action="append", required=True, help="once per size: 4,3,128,128"
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for spec in args.input:
        shape = tuple(int(v) for v in spec.split(","))
        divergence(args.name, shape, args.steps, args.lr, args.top)


if __name__ == "__main__":
    main()
