"""The bench's output: one markdown table per task, the summary table, the written files."""

import json

from compare.bench.variants import VARIANTS
from compare.files import check_writable, write_whole


def _fmt(value, digits=3):
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def markdown(result):
    """One task's table, its setting above it."""
    lines = [
        f"### {result['task']}",
        "",
        f"`{result['command']}`",
        "",
        f"{result['date']}; torch on {result['device']['torch']}, JAX on "
        f"{result['device']['jax']}; {result['dtype']}, precision {result['precision']['mode']}; "
        f"batch {result['batch_size'] or 'full'} ({result['samples_per_step']} samples/step); "
        f"{result['steps']} steps x {result['repeats']} repeats after one warm-up block; "
        f"git {result['git'][:12]}.",
        "",
        "| variant | steps/s | samples/s | ratio to best torch | spread | warm-up s | compile s "
        "| status |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, row in result["variants"].items():
        if row["status"] == "ran":
            mark = " (best torch)" if name == result["best_torch"] else ""
            lines.append(
                f"| {name} | {_fmt(row['steps_per_s'])} | {_fmt(row['samples_per_s'])} "
                f"| {_fmt(row['ratio'])}{mark} | {100 * row['spread']:.0f} % "
                f"| {row['warmup_s']:.2f} | {row['compile_s']:.2f} | ran |"
            )
        else:
            lines.append(f"| {name} | - | - | - | - | - | - | {row['status']}: {row['reason']} |")
    return "\n".join(lines) + "\n"


def summary_markdown(results, skipped=None):
    """Every task in one table: steps/s per variant and, in brackets, its ratio to the best
    torch variant."""
    shown = [v for v in VARIANTS if any(r["variants"][v]["status"] == "ran" for r in results)]
    lines = [
        "| task | batch | " + " | ".join(shown) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in shown) + " |",
    ]
    for r in results:
        cells = []
        for v in shown:
            row = r["variants"][v]
            cells.append(
                f"{_fmt(row['steps_per_s'])} ({_fmt(row['ratio'], 2)}x)"
                if row["status"] == "ran"
                else row["status"]
            )
        lines.append(f"| {r['task']} | {r['batch_size'] or 'full'} | " + " | ".join(cells) + " |")
    for name, reason in (skipped or {}).items():
        lines.append(f"| {name} | - | skipped: {reason} |")
    return "\n".join(lines) + "\n"


def write(out_dir, payload, text, results):
    """``bench.md``, ``bench.png`` and ``bench.json`` (last), written whole or not at all;
    ``results=None`` (``--data-parallel``'s table, nothing per variant to plot): no picture."""
    from compare.tutorials import plots

    check_writable(out_dir)

    def write_files(staging):
        (staging / "bench.md").write_text(text)
        if results:
            plots.bench_speeds(results, staging / "bench.png")
        (staging / "bench.json").write_text(json.dumps(payload, indent=1))

    return write_whole(out_dir, write_files, last="bench.json")
