"""``python -m compare`` (also installed as ``twinnets``): list, run, parity, check, translate,
bench, convert. The parser and the dispatch; what each verb prints is ``compare.printing``'s.

Every failure the user can cause ends with one line on stderr and exit status 2; ``parity``
and ``check`` exit 1 when the two sides disagree beyond the tolerance.
"""

import argparse
import json
import math
import sys
from pathlib import Path

from compare import printing
from compare.errors import CompareError
from compare.parallel import policy
from compare.tutorials import registry


def _seed(text):
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError("a seed is a whole number from 0 to 2**32 - 1")
    return value


def _overrides(pairs):
    overrides = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CompareError(f"--set {pair}: expected KEY=VALUE, e.g. --set lr=0.1")
        overrides[key] = value
    return overrides


def _data_parallel_row(task):
    """``list``'s word on ``--data-parallel``: whether the task can, why not, and a caveat."""
    reason = policy.why_not(task)
    row = {"supported": reason is None, "why_not": reason}
    if reason is None and task.batchnorm:
        row["note"] = (
            "BatchNorm: JAX equals one device; torch DDP on CPU normalises per rank "
            "(SyncBatchNorm needs CUDA), so torch matches only on GPUs"
        )
    return row


def cmd_list(args):
    rows = [
        {
            "name": t.name,
            "lesson": t.lesson,
            "dataset": t.dataset,
            "tiers": list(t.tiers),
            "metric": t.metric,
            "module": t.module,
            "data_parallel": _data_parallel_row(t),
        }
        for t in registry.TASKS.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        printing.task_list(rows)
    return 0


def cmd_run(args):
    task = registry.get(args.task)
    options = dict(
        download=args.download,
        epochs=args.epochs,
        seed=args.seed,
        data_dir=args.data_dir,
        init_from=args.init_from,
        out=args.out,
        quick=args.quick,
        hp=registry.with_overrides(task.hp, _overrides(args.set)),
        progress=not args.no_progress,
    )
    n = _data_parallel(args, task)
    if n is None:
        from compare.tutorials import runs

        result = runs.run(task.name, **options)
    else:
        from compare.parallel import fields

        result = fields.run(task.name, n, **options)
    if args.json:
        print(json.dumps(result))
    else:
        printing.run(result)
    return 0


def _data_parallel(args, task):
    """``--data-parallel N``, or the task's own default for ``run`` (housing-parallel: 2)."""
    n = getattr(args, "data_parallel", None)
    if n is None and args.verb == "run" and task is not None:
        n = task.data_parallel_default
    return n


def cmd_parity(args):
    task = registry.get(args.task)
    options = dict(
        dtype=args.dtype,
        steps=args.steps,
        init_from=args.init_from,
        seed=args.seed,
        hp=registry.with_overrides(task.hp, _overrides(args.set)),
        progress=not args.no_progress and not args.json,
        data_dir=args.data_dir,
    )
    if args.data_parallel is None:
        from compare.tutorials import parity

        result = parity.lockstep(task.name, **options)
    else:
        from compare.parallel import fields

        result = fields.parity(task.name, args.data_parallel, **options)
    if args.json:
        print(json.dumps(result))
    else:
        printing.parity(result)
    return 0 if result["passed"] else 1


def cmd_check(args):
    from compare.toolkit import spec

    report = spec.check_spec(
        args.spec,
        steps=args.steps,
        dtype=args.dtype,
        progress=not args.no_progress and not args.json,
    )
    if args.json:
        print(json.dumps({"spec": str(args.spec), **report.to_json()}))
    else:
        print(f"{args.spec}: {report}")
    return 0 if report.passed else 1


def cmd_translate(args):
    from compare.toolkit import translate_cli

    result = translate_cli.run(
        args.target,
        kwargs=args.kwargs,
        input_specs=args.input,
        out=args.out,
        weights=args.weights,
        check=args.check,
        steps=args.steps,
        lr=args.lr,
        class_name=args.class_name,
        progress=not args.no_progress and not args.json,
    )
    if args.json:
        print(json.dumps(result))
    else:
        printing.translation(result)
    return 0 if result.get("check", {"passed": True})["passed"] else 1


def cmd_bench(args):
    from compare import bench

    if (args.task is None) == (not args.all):
        raise CompareError("bench takes a TASK or --all (not both)")
    opts = bench.make_options(
        quick=args.quick,
        repeats=args.repeats,
        steps=args.steps,
        dtype=args.dtype,
        device=args.device,
        tf32=args.tf32,
        seed=args.seed,
        debug=args.debug,
    )
    if args.data_parallel is not None:
        return _bench_data_parallel(args, opts)
    out = args.out
    if args.all:
        out = out or str(Path("runs") / "bench")
        payload = bench.bench_all(opts, progress=not (args.json or args.no_progress))
        results = payload["tasks"]
        if not results:
            raise CompareError("bench --all: no task could be benchmarked")
        payload["command"] = bench.command_line([], opts, all_tasks=True, out=args.out)
        text = "## Every task: steps/s (ratio to the best torch variant)\n\n"
        text += f"`{payload['command']}`\n\n" + bench.summary_markdown(results, payload["skipped"])
        text += "\n" + "\n".join(bench.markdown(r) for r in results)
    else:
        payload = bench.bench_task(args.task, opts, progress=not (args.json or args.no_progress))
        results = [payload]
        text = bench.markdown(payload)
    if out is not None:
        payload["files"] = bench.write(out, payload, text, results)
    if args.json:
        print(json.dumps(payload))
    else:
        print(text, end="")
        if out is not None:
            print(f"wrote {', '.join(payload['files'])}")
    return 0


def _bench_data_parallel(args, opts):
    from compare import bench
    from compare.bench import data_parallel

    payload = data_parallel.bench(args.task, args.data_parallel, opts)
    text = data_parallel.markdown(payload)
    if args.out is not None:
        payload["files"] = bench.write(args.out, payload, text, results=None)
    if args.json:
        print(json.dumps(payload))
    else:
        print(text, end="")
    return 0


def cmd_convert(args):
    from flax import nnx
    from safetensors import SafetensorError

    import jaxnets
    from compare import port

    task = registry.get(args.task)
    jaxnets.use_float64()  # keep float64 files float64
    jax_module, _ = task.modules()
    model = jax_module.new_model(task.hp, nnx.Rngs(0))
    src, dst = Path(args.input), Path(args.output)
    if not src.is_file():
        raise CompareError(f"{src}: no such file")
    if not dst.parent.is_dir():
        raise CompareError(f"{dst.parent}: no such directory")

    direction = args.to
    if direction == "auto":  # a pickle is torch's; safetensors tell by their key names
        direction = "flax"
        if src.suffix == ".safetensors":
            keys = set(port.read_state_dict(src))
            torch_keys, flax_keys = set(port.mapping(model)), jaxnets.checkpoint_keys(model)
            if keys == flax_keys and (keys != torch_keys or dst.suffix != ".safetensors"):
                direction = "torch"  # (raw-parameter lessons share their names: the output decides)
    if direction == "flax":
        if dst.suffix != ".safetensors":
            raise CompareError(f"{dst}: a Flax checkpoint is written as .safetensors")
        port.torch_to_nnx(port.read_state_dict(src), model, source=str(src))
        jaxnets.save_checkpoint(model, dst)
    else:
        try:
            jaxnets.load_checkpoint(model, src)
        except (ValueError, SafetensorError) as err:
            raise CompareError(f"{src}: not a Flax checkpoint of {task.name} ({err})") from None
        port.write_state_dict(port.nnx_to_torch(model), dst)
    what = "torch state dict to Flax" if direction == "flax" else "Flax to torch state dict"
    print(f"{src} -> {dst} ({what})")
    return 0


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _learning_rate(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _add_data_parallel(p):
    p.add_argument(
        "--data-parallel",
        type=_positive,
        metavar="N",
        help="train each side on N devices: JAX one mesh (N host devices on CPU), torch N "
        "DistributedDataParallel processes (docs/SCALING.md)",
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other error here (argparse adds usage)
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = _Parser(
        prog="twinnets", description="PyTorch tutorials and their JAX twins, trained side by side."
    )
    verbs = parser.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("list", help="every task, its lesson, dataset and parity tiers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = verbs.add_parser(
        "run", help="train both sides from the same weights, write metrics and plots"
    )
    p.add_argument("task")
    p.add_argument("--epochs", type=int, help="default: the lesson's schedule")
    p.add_argument("--seed", type=_seed, default=0, help="initial weights and batch order")
    p.add_argument(
        "--data-dir", help="the full MNIST's four IDX files (default: the shipped 5k set)"
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch the full MNIST into --data-dir with torchvision (needs internet)",
    )
    p.add_argument(
        "--init-from", help="a torch state dict (.pt or .safetensors) to start both from"
    )
    p.add_argument("--out", help="output directory (default runs/TASK)")
    p.add_argument("--quick", action="store_true", help="a short schedule, for a smoke test")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a hyperparameter")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--no-progress", action="store_true")
    _add_data_parallel(p)
    p.set_defaults(func=cmd_run)

    p = verbs.add_parser("parity", help="lockstep parity, tiers 1 to 3; exit 1 if it fails")
    p.add_argument("task")
    p.add_argument("--steps", type=int, help="default: the whole lesson (one epoch for MNIST)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument(
        "--init-from", help="a torch state dict (.pt or .safetensors) to start both from"
    )
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument(
        "--data-dir", help="the full MNIST's four IDX files (default: the shipped 5k set)"
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a hyperparameter")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    _add_data_parallel(p)
    p.set_defaults(func=cmd_parity)

    p = verbs.add_parser(
        "check", help="your own torch model against its Flax port, in lockstep; exit 1 if apart"
    )
    p.add_argument("spec", help="a Python file defining the two models, losses, optimizer, data")
    p.add_argument("--steps", type=int, help="default: one pass over the spec's batches")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_check)

    p = verbs.add_parser(
        "translate",
        help="Flax NNX source for a torch module, its weights ported; --check proves it",
    )
    p.add_argument("target", metavar="MODULE:CALLABLE", help="e.g. torchvision.models:resnet18")
    p.add_argument(
        "--kwargs", nargs="*", default=[], metavar="K=V", help="arguments of the callable"
    )
    p.add_argument(
        "--input",
        required=True,
        action="append",
        metavar="SHAPE",
        help="the example input, torch's layout: 2,3,32,32 (floats) or 4,12:int100 (integers "
        "below 100); once per argument of the forward, in order (--input 4,784 --input 4:int10)",
    )
    p.add_argument("--out", metavar="FILE.py", help="write the source there (default: stdout)")
    p.add_argument(
        "--weights",
        metavar="PATH",
        help="save the ported Flax weights: PATH.safetensors (one flat file), any other PATH a "
        "new Orbax checkpoint directory of nnx.state (docs/TRANSLATE.md restores it)",
    )
    p.add_argument("--class-name", help="the generated top class (default: the torch class's)")
    p.add_argument("--check", action="store_true", help="float64 lockstep on the spot")
    p.add_argument("--steps", type=_positive, default=5, help="--check's steps (default 5)")
    p.add_argument(
        "--lr",
        type=_learning_rate,
        default=0.01,
        help="--check's learning rate (SGD, momentum 0.9; default 0.01)",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_translate)

    p = verbs.add_parser(
        "bench", help="training speed: torch eager/compile/CUDA graphs, JAX steps/scan, lesson"
    )
    p.add_argument("task", nargs="?", help="a task name (or --all)")
    p.add_argument("--all", action="store_true", help="every task, a summary table and a plot")
    p.add_argument("--quick", action="store_true", help="a handful of steps, 2 repeats")
    p.add_argument("--repeats", type=int, help="timed blocks per variant (default 5; quick 2)")
    p.add_argument(
        "--steps",
        type=int,
        help="steps per timed block (default: one epoch's full batches, or 500 full-batch steps)",
    )
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--tf32",
        action="store_true",
        help="allow TF32 on both sides (default: full float32 matmuls and convolutions)",
    )
    p.add_argument("--seed", type=_seed, default=0, help="initial weights and batch order")
    p.add_argument("--out", help="write bench.md, bench.png, bench.json there (--all: runs/bench)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show the children's tracebacks")
    _add_data_parallel(p)
    p.set_defaults(func=cmd_bench)

    p = verbs.add_parser("convert", help="a torch state dict to a Flax checkpoint, or back")
    p.add_argument("task")
    p.add_argument("input", help=".pt/.pth or .safetensors")
    p.add_argument("output", help=".safetensors for Flax; .pt or .safetensors for torch")
    p.add_argument(
        "--to",
        choices=("auto", "flax", "torch"),
        default="auto",
        help="direction (auto: by the input's key names)",
    )
    p.set_defaults(func=cmd_convert)
    return parser


def _ask_for_devices(args):
    """``--data-parallel N``: checked against the task from the registry alone, then N JAX
    host devices asked for, before JAX's backend starts (it fixes their count)."""
    if args.verb not in ("run", "parity", "bench"):
        return
    task = registry.get(args.task) if args.task else None
    n = _data_parallel(args, task)
    if n is None:
        return
    if task is None:  # bench without a task: --all, or nothing (cmd_bench says so)
        if getattr(args, "all", False):
            raise CompareError("bench --data-parallel takes one TASK, not --all")
        return
    policy.check_request(
        task, registry.with_overrides(task.hp, _overrides(getattr(args, "set", None))), n
    )
    from compare.parallel import jax_mesh

    jax_mesh.set_jax_devices(n)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        _ask_for_devices(args)
        return args.func(args)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
