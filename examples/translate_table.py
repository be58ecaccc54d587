"""The proof table of ``twinnets translate``: torchvision's models through the command itself.

    python examples/translate_table.py [--only NAME ...] [--out docs/TRANSLATE.md]

Each model runs in its own process, as a user would run it:
``twinnets translate torchvision.models:NAME --kwargs ... --input SHAPE --out FILE --check
--steps 5 --json`` (training mode, SGD with momentum, float64 lockstep). The table (translated?,
the lockstep's figures, lines of generated code, the time to translate and to check, or the
failure's one line) is written between the markers of docs/TRANSLATE.md, with the head of the
generated resnet18.
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
# rounding noise: the lockstep is chaotic in torch itself (docs/TRANSLATE.md).
STOCHASTIC = "stochastic_depth_prob=0.0"
MODELS = {
    "resnet18": (["num_classes=10"], "2,3,64,64", ""),
    "squeezenet1_1": (["num_classes=10"], "2,3,64,64", ""),
    "shufflenet_v2_x0_5": (["num_classes=10"], "2,3,64,64", ""),
    "regnet_y_400mf": (["num_classes=10"], "2,3,64,64", ""),
    "mobilenet_v2": (["num_classes=10"], "2,3,64,64", ""),
    "mobilenet_v3_small": (["num_classes=10"], "2,3,64,64", ""),
    "efficientnet_b0": (["num_classes=10", STOCHASTIC], "2,3,64,64", "stochastic depth off"),
    "googlenet": (
        ["num_classes=10", "aux_logits=False", "init_weights=True"],
        "2,3,64,64",
        "aux_logits=False: one output",
    ),
    "densenet121": (["num_classes=10"], "2,3,64,64", ""),
    "convnext_tiny": (["num_classes=10", STOCHASTIC], "2,3,64,64", "stochastic depth off"),
    "alexnet": (["num_classes=10"], "2,3,64,64", ""),
    "resnet50": (["num_classes=10"], "2,3,64,64", ""),
    "vgg11_bn": (["num_classes=10"], "2,3,32,32", ""),
}
BEGIN, END = "<!-- translate-table:begin -->", "<!-- translate-table:end -->"


def run_one(name, folder, steps):
    kwargs, shape, note = MODELS[name]
    out = Path(folder) / f"{name}_nnx.py"
    command = [sys.executable, "-m", "compare", "translate", f"torchvision.models:{name}"]
    command += ["--kwargs", *kwargs, "--input", shape, "--out", str(out)]
    command += ["--check", "--steps", str(steps), "--json", "--no-progress"]
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


def table(rows):
    head = "| model | input | translated | lockstep (5 steps, float64) | loss / params rel. diff "
    head += "| lines | translate s | check s | note |\n"
    head += "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    out = []
    for r in rows:
        shape = r["input"] if isinstance(r["input"], str) else ",".join(map(str, r["input"]))
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
        bound = c.get("bound", {})
        if c.get("passed") and max(c["loss_max_rel_diff"], c["param_max_rel_diff"]) > 1e-9:
            verdict += f" (by its noise bound, {bound.get('kind', '')})"
        diffs = f"{c.get('loss_max_rel_diff', float('nan')):.1e} / "
        diffs += f"{c.get('param_max_rel_diff', float('nan')):.1e}"
        out.append(
            f"| {r['model']} | {r['input']} | yes | {verdict} | {diffs} | {r['lines']} | "
            f"{r['translate_seconds']:.1f} | {r.get('check_seconds', 0):.0f} | {r['note']} |"
        )
    return head + "\n".join(out) + "\n"


def excerpt(rows, lines=60):
    for r in rows:
        if r["model"] == "resnet18" and r.get("source_file"):
            text = Path(r["source_file"]).read_text().splitlines()
            command = "twinnets translate torchvision.models:resnet18 --kwargs num_classes=10"
            command += f" --input {r['input']} --out resnet18_nnx.py"
            lead = f"The head of the generated resnet18 (`{command}`):\n\n"
            return lead + "```python\n" + "\n".join(text[:lines]) + "\n# ...\n```\n"
    return ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(MODELS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "docs" / "TRANSLATE.md"))
    parser.add_argument("--json", help="also write the rows as JSON there")
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
