"""How often torch's own float32 rounding switches a ReLU unit in resnet18: the figure behind
``examples/vision_resnet.py``'s float32 paragraph.

One training-mode gradient of torchvision's ``resnet18(num_classes=10)`` on a batch of 8 random
32x32 images, in float64, in float32, and in float32 again from weights each nudged by one
float32 rounding step (times 1 +- eps, signs drawn): each line is a gradient's largest
difference relative to its largest value. Most nudged copies land about 1e-5 from the
unnudged float32 run; one whose rounding switches a unit near zero lands 1e-3 or more away.

    python examples/float32_switches.py [SEED [COPIES]]   # default: seed 4, 16 copies
"""

import copy
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

NAMES = ["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "fc.weight"]


def gradients(model, dtype, x, y):
    model = model.to(dtype).train()
    loss = F.cross_entropy(model(torch.tensor(x, dtype=dtype)), torch.tensor(y))
    model.zero_grad()
    loss.backward()
    return {name: p.grad.double().clone() for name, p in model.named_parameters()}


def rel_diff(a, b):
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-300)


def main(seed=4, copies=16):
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10)
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((8, 3, 32, 32)), rng.integers(0, 10, 8)
    exact = gradients(copy.deepcopy(model), torch.float64, x, y)
    single = gradients(copy.deepcopy(model), torch.float32, x, y)
    print("float32 vs float64  ", {n: f"{rel_diff(single[n], exact[n]):.1e}" for n in NAMES})
    signs = np.random.default_rng([seed, 11])
    for k in range(copies):
        nudged = copy.deepcopy(model).float()
        with torch.no_grad():
            for tensor in nudged.state_dict().values():
                if tensor.is_floating_point():
                    s = signs.choice([-1.0, 1.0], size=tuple(tensor.shape))
                    tensor.mul_(torch.from_numpy(1 + s * np.finfo(np.float32).eps).float())
        got = gradients(nudged, torch.float32, x, y)
        print(f"nudged {k:2d} vs float32", {n: f"{rel_diff(got[n], single[n]):.1e}" for n in NAMES})


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
