"""A translation rule made wrong on purpose, checked at several SGD rates: does a rate hide it?

    python examples/wrong_rule_at_rates.py mobilenet_v2 --rule relu6 "jax.nn.relu({x})" \
        --input 4,3,128,128 --lr 0.01 0.003

For torchvision model NAME (``num_classes=10``, training mode, ``torch.manual_seed(0)``) the
translator's rule for the op (``F.relu6``) and its module (``nn.ReLU6``) is replaced by the
expression given, and the translation is checked (``compare.check``, float64, 5 steps) at each
rate: a wrong port should fail at every one. The translate table checks four rows at a lower
rate than 0.01 (docs/TRANSLATE.md, "What a lower rate costs the check"); this is the control.
"""

import argparse

import torch
import torchvision

from compare.toolkit import translate as tr


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--rule", nargs=2, metavar=("OP", "EXPR"), required=True)
    parser.add_argument("--input", default="4,3,128,128")
    parser.add_argument("--lr", nargs="+", type=float, default=[0.01])
    args = parser.parse_args(argv)
    op, expression = args.rule
    if op not in tr.OPS:
        parser.error(f"--rule: no op {op!r} among the translator's rules")
    tr.OPS[op] = tr._unary(expression)
    for leaf in list(tr.LEAVES):
        if leaf.__name__.lower() == op:
            tr.LEAVES[leaf] = tr.Fn(expression)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.name)(num_classes=10).train()
    shape = tuple(int(v) for v in args.input.split(","))
    result = tr.translate(model, torch.randn(*shape))
    for lr in args.lr:
        report = result.check(steps=5, lr=lr)
        first = report.first_divergence
        where = f"step {first['step']}, {first['tensor']} {first['rel_diff']:.1e}" if first else ""
        print(f"lr {lr:g}: {'passed' if report.passed else 'FAILED'} {where}".rstrip(), flush=True)


if __name__ == "__main__":
    main()
