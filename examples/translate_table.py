"""The proof table of ``twinnets translate``: torchvision's models through the command itself.

    python examples/translate_table.py [--only NAME ...] [--out docs/TRANSLATE.md]
    python examples/translate_table.py --tutorials [--task TASK ...] [--out docs/TRANSLATE.md]

Each model runs in its own process, as a user would run it:
``twinnets translate torchvision.models:NAME --kwargs ... --input SHAPE --out FILE --check
--steps 5 --json [--lr RATE]`` (training mode, SGD with momentum, float64 lockstep; ``RATES``
below for the rows checked at a lower rate). The table (translated?, the lockstep's figures,
lines of generated code, the time to translate and to check, or the failure's one line) is
written between the markers of docs/TRANSLATE.md, with the head of the
generated resnet18.

``--tutorials``: every tutorial's torch model instead (``compare.tutorials.models.EXAMPLES``),
through ``twinnets translate compare.tutorials:torch_model --kwargs task=TASK [model=NET]``, in
its own table between the tutorials' markers, with one more column: whether the generated
module's parameter tree (paths and shapes of everything the weight port writes) equals the
hand-written ``jaxnets`` twin's, and what differs otherwise.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# name: (kwargs, input, note). 64x64 images: at 32x32 most of these end in 1x1 maps, where a
# BatchNorm normalises a handful of numbers (two, with batch 2) and its gradient is mostly
# rounding noise: the lockstep is chaotic in torch itself (docs/TRANSLATE.md). Batch 4 where
# batch 2 was still chaotic (the issue allows 2 to 4), and 128x128 where 64x64 at batch 4 still
# was (4x4 maps at the last stage: 64 numbers per BatchNorm channel instead of 16).
STOCHASTIC = "stochastic_depth_prob=0.0"
MODELS = {
    "resnet18": (["num_classes=10"], "2,3,64,64", ""),
    "squeezenet1_1": (["num_classes=10"], "2,3,64,64", ""),
    "shufflenet_v2_x0_5": (["num_classes=10"], "4,3,128,128", "batch 4, 128x128"),
    "regnet_y_400mf": (["num_classes=10"], "4,3,128,128", "batch 4, 128x128"),
    "mobilenet_v2": (["num_classes=10"], "4,3,128,128", "batch 4, 128x128"),
    "mobilenet_v3_small": (["num_classes=10"], "2,3,64,64", ""),
    "efficientnet_b0": (
        ["num_classes=10", STOCHASTIC],
        "4,3,128,128",
        "stochastic depth off; batch 4, 128x128",
    ),
    "googlenet": (
        ["num_classes=10", "aux_logits=False", "init_weights=True"],
        "4,3,64,64",
        "aux_logits=False: one output; batch 4",
    ),
    "densenet121": (["num_classes=10"], "2,3,64,64", ""),
    "convnext_tiny": (["num_classes=10", STOCHASTIC], "2,3,64,64", "stochastic depth off"),
    "alexnet": (["num_classes=10"], "2,3,64,64", "64x64: 32x32 pools to nothing"),
    "resnet50": (["num_classes=10"], "4,3,128,128", "batch 4, 128x128"),
    "vgg11_bn": (["num_classes=10"], "2,3,32,32", ""),
}
# SGD's rate where the check's default, 0.01, leaves torch chaotic against itself (with momentum
# 0.9 at batch 4 resnet50's loss goes 2.45, 5.21, 11.3): the largest of 0.01, 0.003, 0.001,
# 0.0003 and 0.0001 at which torch, from weights nudged by one rounding step, stays within 1e-10
# of itself over the 5 steps, so that check holds the loss and the parameters to 1e-9, not to 10x
# torch's noise (the sweep is in docs/TRANSLATE.md). Gradients, outputs and statistics are each
# measured at their own scale: their relative differences do not shrink with the rate.
RATES = {"regnet_y_400mf": 0.003, "mobilenet_v2": 0.003, "googlenet": 0.0001, "resnet50": 0.0001}
BEGIN, END = "<!-- translate-table:begin -->", "<!-- translate-table:end -->"


def within_the_fixed_bound(check):
    """Passed, within 1e-9, and held to 1e-9 itself: a check whose bound was torch's noise
    (``sensitivity``) is said to be so even where its figures are within 1e-9."""
    worst = max(check.get("loss_max_rel_diff", 0.0), check.get("param_max_rel_diff", 0.0))
    fixed = check.get("bound", {}).get("kind", "fixed") == "fixed"
    return bool(check.get("passed")) and worst <= 1e-9 and fixed


def run_one(name, folder, steps):
    kwargs, shape, note = MODELS[name]
    out = Path(folder) / f"{name}_nnx.py"
    command = [sys.executable, "-m", "compare", "translate", f"torchvision.models:{name}"]
    command += ["--kwargs", *kwargs, "--input", shape, "--out", str(out)]
    command += ["--check", "--steps", str(steps), "--json", "--no-progress"]
    if name in RATES:
        command += ["--lr", str(RATES[name])]
        note = "; ".join(filter(None, [note, f"lr {RATES[name]}"]))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    row = {"model": name, "input": shape, "kwargs": kwargs, "note": note, "rc": done.returncode}
    row["wall_seconds"] = round(time.perf_counter() - start, 1)
    if done.stdout.strip():
        row.update(json.loads(done.stdout.strip().splitlines()[-1]))
        row["source_file"] = str(out)
    else:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        row["error"] = lines[-1] if lines else f"exit {done.returncode}"
    return row


def input_spec(row):
    """The row's input as the command line spells it: the JSON the command prints turns
    ``4,3,128,128`` into a list."""
    shape = row["input"]
    return shape if isinstance(shape, str) else ",".join(map(str, shape))


def table(rows):
    head = "| model | input | translated | lockstep (5 steps, float64) | loss / params rel. diff "
    head += "| lines | translate s | check s | note |\n"
    head += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    out = []
    for r in rows:
        shape = input_spec(r)
        r = {**r, "input": shape}
        if "error" in r:
            reason = r["error"].removeprefix("error: ")
            done = "not run" if reason.startswith("not run") else "no"
            out.append(f"| {r['model']} | {shape} | {done} | - | - | - | - | - | {reason} |")
            continue
        c = r.get("check", {})
        verdict = "passed" if c.get("passed") else "FAILED"
        first = c.get("first_divergence")
        if not c.get("passed") and first:
            r["note"] = "; ".join(
                filter(
                    None,
                    [
                        r["note"],
                        f"first divergence: step {first['step']}, {first['tensor']} "
                        f"{first['rel_diff']:.1e} > bound {first['bound']:.1e}",
                    ],
                )
            )
        if c.get("passed") and not within_the_fixed_bound(c):
            verdict += f" (by its noise bound, {c.get('bound', {}).get('kind', '')})"
        diffs = f"{c.get('loss_max_rel_diff', float('nan')):.1e} / "
        diffs += f"{c.get('param_max_rel_diff', float('nan')):.1e}"
        out.append(
            f"| {r['model']} | {r['input']} | yes | {verdict} | {diffs} | {r['lines']} | "
            f"{r['translate_seconds']:.1f} | {r.get('check_seconds', 0):.0f} | {r['note']} |"
        )
    return head + "\n".join(out) + "\n"


def excerpt(rows):
    """The generated resnet18 as a reader meets it: the module's head and its first class
    whole, then the model class's forward (its ``__init__`` elided to its last line)."""
    for r in rows:
        if r["model"] == "resnet18" and r.get("source_file"):
            text = Path(r["source_file"]).read_text().rstrip("\n").splitlines()
            classes = [i for i, line in enumerate(text) if line.startswith("class ")]
            model = classes[-1]
            call = next(i for i in range(model, len(text)) if "def __call__(" in text[i])
            shown = text[: classes[1]] if len(classes) > 1 else text[:model]
            shown += ["# ...", "", ""] + text[model : model + 2] + ["", "        ..."]
            shown += [text[call - 2], ""] + text[call:]
            shape = input_spec(r)
            command = "twinnets translate torchvision.models:resnet18 --kwargs num_classes=10"
            command += f" --input {shape} --out resnet18_nnx.py"
            lead = f"The head of the generated resnet18 (`{command}`):\n\n"
            body = "```python\n" + "\n".join(shown) + "\n```\n"
            return lead + body + f"\n({len(text)} lines in all.)\n"
    return ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(MODELS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "docs" / "TRANSLATE.md"))
    parser.add_argument("--json", help="also write the rows as JSON there")
    parser.add_argument("--tutorials", action="store_true", help="the tutorials' models instead")
    parser.add_argument(
        "--task",
        nargs="+",
        action="extend",
        help="with --tutorials: only these tasks (--task vae cgan, or --task vae --task cgan); "
        "the other tasks' rows stay as they are",
    )
    args = parser.parse_args(argv)
    if args.tutorials:
        return tutorials_main(args)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.only or MODELS:
            row = run_one(name, folder, args.steps)
            print(json.dumps({k: v for k, v in row.items() if k != "source"}), flush=True)
            rows.append(row)
            write(args, rows)  # after every model: a long run can be read as it goes
    print(table(rows))
    return 0 if all(r.get("check", {}).get("passed") for r in rows) else 1


def write(args, rows):
    """The table between the markers: the rows run now, and the rows already there for the
    models not run now (``--only`` updates its models' rows and keeps the others), in
    ``MODELS`` order; the resnet18 excerpt is kept unless resnet18 ran."""
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    doc = Path(args.out)
    body = doc.read_text() if doc.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in body:
        body += f"\n{BEGIN}\n{END}\n"
    before, _, rest = body.partition(BEGIN)
    old, _, after = rest.partition(END)
    head, new_rows = table(rows).split("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    kept = {line.split("|")[1].strip(): line for line in old.splitlines() if line.startswith("| ")}
    kept.update({line.split("|")[1].strip(): line for line in new_rows.splitlines() if line})
    lines = [kept[name] for name in MODELS if name in kept]
    text = head + "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(lines)
    ex = excerpt(rows)
    if not ex:  # resnet18 not run now: what followed the table stays
        tail = [line for line in old.strip("\n").splitlines() if not line.startswith("|")]
        ex = "\n".join(tail).strip("\n") + "\n" if tail else ""
    doc.write_text(before + f"{BEGIN}\n{text}\n\n{ex}{END}" + after)


# -- the tutorials' models ----------------------------------------------------------------------

TUTORIALS_BEGIN = "<!-- translate-tutorials:begin -->"
TUTORIALS_END = "<!-- translate-tutorials:end -->"


def run_tutorial(example, folder, steps):
    """``example`` (a ``compare.tutorials.models.Example``) through the command, then its
    generated module's parameter tree against the ``jaxnets`` twin's."""
    name = example.task + (f"-{example.model}" if example.model else "")
    out = Path(folder) / f"{name.replace('-', '_')}_nnx.py"
    command = [sys.executable, "-m", "compare", "translate", "compare.tutorials:torch_model"]
    command += ["--kwargs", *example.kwargs(), *example.input_flags(), "--out", str(out)]
    command += ["--check", "--steps", str(steps), "--json", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    row = {"task": example.task, "model": example.model, "input": example.input}
    row.update(same_as=list(example.same_as), rc=done.returncode)
    row["wall_seconds"] = round(time.perf_counter() - start, 1)
    if not done.stdout.strip():
        row["error"] = last_line(done)
        # the line may be check's (a dropout it cannot feed): does it translate without?
        plain = [a for a in command if a != "--check"]
        plain[plain.index("--steps") : plain.index("--steps") + 2] = []
        done = subprocess.run(plain, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        if not done.stdout.strip():
            return row
        row["check_error"] = row.pop("error")
    row.update(json.loads(done.stdout.strip().splitlines()[-1]))
    row["input"] = example.input
    row["tree"] = tree_verdict(example, out, row["class_name"])
    return row


def last_line(done):
    """The command's one line, the checkout's paths made relative to it."""
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else f"exit {done.returncode}"
    return line.removeprefix("error: ").replace(f"{ROOT}{os.sep}", "")


def tree_verdict(example, source_file, class_name):
    """``equal``, or what differs between the generated module's tree and the twin's."""
    import types

    from flax import nnx

    from compare.tutorials import models

    namespace = types.ModuleType(f"generated_{source_file.stem}")
    sys.modules[namespace.__name__] = namespace  # what the generated classes may look up
    try:
        exec(compile(source_file.read_text(), str(source_file), "exec"), namespace.__dict__)  # noqa: S102
        generated = getattr(namespace, class_name)(rngs=nnx.Rngs(0))
        twin = models.twin_model(example.task, example.model)
        difference = models.tree_difference(
            models.parameter_tree(generated), models.parameter_tree(twin)
        )
    except Exception as err:  # a row of the table says so; the other rows still run
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return f"not compared ({type(err).__name__}: {first})"
    return difference or "equal"


def tutorial_table(rows):
    head = "| task | model | input | translated | lockstep (5 steps, float64) "
    head += "| loss / params rel. diff | parameter tree = `jaxnets` twin's | lines | translate s "
    head += "| check s | note |\n"
    head += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    out = []
    for r in rows:
        model = r["model"] or "-"
        if r["same_as"]:
            model += f" (= {', '.join(r['same_as'])})"
        where = f"| {r['task']} | {model} | {r['input']} "
        if "error" in r:
            reason = r["error"].replace("|", "\\|")
            out.append(where + f"| no | - | - | - | - | - | - | {reason} |")
            continue
        tree = "yes" if r["tree"] == "equal" else r["tree"]
        tree = tree if tree.startswith(("yes", "not compared")) else f"no: {tree}"
        if "check_error" in r:
            reason = "check refused it: " + r["check_error"].replace("|", "\\|")
            out.append(
                where + f"| yes | refused | - | {tree} | {r['lines']} | "
                f"{r['translate_seconds']:.1f} | - | {reason} |"
            )
            continue
        c = r.get("check", {})
        verdict = "passed" if c.get("passed") else "FAILED"
        if c.get("passed") and not within_the_fixed_bound(c):
            verdict += f" (by its noise bound, {c.get('bound', {}).get('kind', '')})"
        note = ""
        first = c.get("first_divergence")
        if not c.get("passed") and first:
            note = (
                f"first divergence: step {first['step']}, {first['tensor']} "
                f"{first['rel_diff']:.1e} > bound {first['bound']:.1e}"
            )
        diffs = f"{c.get('loss_max_rel_diff', float('nan')):.1e} / "
        diffs += f"{c.get('param_max_rel_diff', float('nan')):.1e}"
        out.append(
            where + f"| yes | {verdict} | {diffs} | {tree} | {r['lines']} | "
            f"{r['translate_seconds']:.1f} | {r.get('check_seconds', 0):.1f} | {note} |"
        )
    return head + "\n".join(out) + "\n"


def provenance(rows):
    """The date, the machine and the versions the table was measured with, one paragraph."""
    import datetime
    import platform
    from importlib.metadata import version

    passed = sum(within_the_fixed_bound(r.get("check", {})) for r in rows)
    day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = ", ".join(f"{p} {version(p)}" for p in ("torch", "jax", "flax", "optax"))
    return (
        f"Measured {day} on {platform.system()} {platform.machine()} ({os.cpu_count()} CPU "
        f"cores, CPU only), Python {platform.python_version()}, {versions}: {passed} of "
        f"{len(rows)} models translated and within 1e-9 (the fixed bound) in float64 lockstep "
        "(`python examples/translate_table.py --tutorials`).\n"
    )


def tutorials_main(args):
    sys.path.insert(0, str(ROOT))  # compare.tutorials.models, this checkout's
    from compare.tutorials import models

    unknown = sorted(set(args.task or ()) - {e.task for e in models.EXAMPLES})
    if unknown:
        print(f"error: --task {', '.join(unknown)}: no such tutorial task", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for example in models.EXAMPLES:
            if args.task and example.task not in args.task:
                continue
            row = run_tutorial(example, folder, args.steps)
            print(json.dumps({k: v for k, v in row.items() if k != "source"}), flush=True)
            rows.append(row)
            write_tutorials(args, rows)  # after every model: a long run can be read as it goes
    print(tutorial_table(rows))
    return 0 if all(r.get("check", {}).get("passed") for r in rows) else 1


def write_tutorials(args, rows):
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    doc = Path(args.out)
    body = doc.read_text() if doc.exists() else ""
    if TUTORIALS_BEGIN not in body:
        body += f"\n{TUTORIALS_BEGIN}\n{TUTORIALS_END}\n"
    before, _, rest = body.partition(TUTORIALS_BEGIN)
    old, _, after = rest.partition(TUTORIALS_END)
    text = f"{tutorial_table(rows)}\n{provenance(rows)}"
    if args.task:  # some tasks run again: the others' rows and their provenance stay
        text = merged_tutorials(old, rows)
    doc.write_text(before + f"{TUTORIALS_BEGIN}\n{text}{TUTORIALS_END}" + after)


def _row_key(line):
    cells = line.split("|")
    return cells[1].strip(), cells[2].strip()


def merged_tutorials(old, rows):
    """The table already between the markers with the rows of ``rows`` put in their place
    (by task and model; a row new to the table goes last), the earlier provenance kept, and
    one line saying which tasks were measured again, when, and how the whole table stands."""
    new_lines = tutorial_table(rows).splitlines()
    head, fresh = new_lines[:2], {_row_key(line): line for line in new_lines[2:]}
    kept = [line for line in old.splitlines() if line.startswith("| ")][2:]
    lines = [fresh.pop(_row_key(line), line) for line in kept] + list(fresh.values())
    notes = [
        line
        for line in old.strip("\n").splitlines()
        if line.strip() and not line.startswith("|") and not line.startswith("Rows of ")
    ]
    within = 0
    for line in lines:
        cells = [c.strip() for c in line.split("|")]
        if cells[5] == "passed":
            within += all(float(d) <= 1e-9 for d in cells[6].split(" / "))
    again = list(dict.fromkeys(r["task"] for r in rows))
    day, where = provenance(rows).split(" on ", 1)
    where = where.split(":", 1)[0]
    note = (
        f"Rows of {', '.join(again)} measured again {day.removeprefix('Measured ')} on {where}: "
        f"{within} of {len(lines)} models of the table translated and within 1e-9 in float64 "
        f"lockstep (`python examples/translate_table.py --tutorials --task {' '.join(again)}`).\n"
    )
    return "\n".join(head + lines) + "\n\n" + "\n".join(notes) + "\n\n" + note


if __name__ == "__main__":
    sys.exit(main())
