"""What the command line prints: each verb's report as text (``--json`` prints the result
itself). One function per report; ``compare.cli`` calls them after the work is done."""

import json
import sys


def task_list(rows):
    """``list``: the tasks as aligned columns, then each one's word on ``--data-parallel``."""
    table = [("task", "dataset", "tiers", "lesson")]
    table += [(r["name"], r["dataset"], ",".join(map(str, r["tiers"])), r["lesson"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]  # the last column is free
    for row in table:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
            + "  "
            + row[3]
        )
    print("\n--data-parallel N:")
    width = widths[0]
    for r in rows:
        dp = r["data_parallel"]
        word = "yes" if dp["supported"] else f"no: {dp['why_not']}"
        if dp.get("note"):
            word += f" ({dp['note']})"
        print(f"  {r['name']:<{width}}  {word}")


def run(result):
    """``run``: each side's metrics and training time, what the lesson adds, where it wrote."""
    head = f"{result['task']}: {result['epochs']} epochs, {result['steps']} steps"
    print(f"{head} on {result['dataset']}")
    for side in ("torch", "jax"):
        r = result[side]
        shown = {k: v for k, v in r["metrics"].items() if k != "per_epoch"}
        print(f"  {side:<5} {json.dumps(shown)}  ({r['train_seconds']:.2f} s training)")
    for sentence in result.get("tags", {}).get("torch", {}):
        tags = {side: " ".join(result["tags"][side][sentence]) for side in ("torch", "jax")}
        print(f"  {sentence!r}: torch {tags['torch']}, jax {tags['jax']}")
    if "numpy_by_hand" in result:
        numpy_by_hand(result["numpy_by_hand"])
    if "equivalences" in result:
        table = result["equivalences"]
        verdict = "all equal" if table["passed"] else "NOT ALL EQUAL"
        print(f"  equivalences, torch and JAX ({table['dtype']}): {verdict}")
        print("\n".join(equivalence_rows(table)))
    if "noise" in result:
        print(f"  noise: {result['noise']}")
    if "data_parallel" in result:
        data_parallel_split(result["data_parallel"])
    diff = result["loss_max_abs_diff"]
    print(f"  largest loss difference {diff:.3g}; wrote {result['out_dir']}/")


def parity(result):
    """``parity``: the verdict, each relative difference against the bound, what it adds."""
    verdict = "PASSED" if result["passed"] else "FAILED"
    where = f" on {result['data_parallel']} devices" if "data_parallel" in result else ""
    print(
        f"{result['task']} {result['dtype']} lockstep{where} over {result['steps']} steps: "
        f"{verdict}"
    )
    for key in (
        "loss_max_rel_diff",
        "param_max_rel_diff",
        "forward_max_rel_diff",
        "grad_max_rel_diff",
    ):
        print(f"  {key:<22} {result[key]:.3e}")
    print(f"  {'tolerance':<22} {result['tolerance']:.1e}")
    bound = result["bound"]
    if bound["kind"] == "sensitivity":
        print(
            f"  {'':<22} = {bound['factor']:g} x self-divergence "
            f"{bound['self_divergence']:.2e} (chaotic trajectory; floor {bound['floor']:.0e})"
        )
    if "samples_max_rel_diff" in result:
        print(f"  {'samples_max_rel_diff':<22} {result['samples_max_rel_diff']:.3e}")
    if "test_predictions_differ" in result:
        print(f"  {'test predictions differ':<22} {result['test_predictions_differ']}")
    if "equivalences_max_rel_diff" in result:
        print(f"  {'equivalences':<22} {result['equivalences_max_rel_diff']:.3e}")
    if "noise" in result:
        print(f"  noise: {result['noise']}")
    if "data_parallel" in result:
        vs = result["vs_single_device"]
        print(f"  {'vs single device':<22} jax {vs['jax']:.3e}, torch {vs['torch']:.3e}")
        single = result["single_device"]
        print(
            f"  {'single device, cross':<22} losses {single['loss_max_rel_diff']:.3e}, "
            f"parameters {single['param_max_rel_diff']:.3e}"
        )
        data_parallel_split(result["split"])


def data_parallel_split(split):
    """How each global batch was split: once, as the lesson prints its 64 + 64 of 128."""
    n, batch = split["n"], split["global_batch"]
    jax_sizes = " + ".join(map(str, split["jax_device_batches"]))
    torch_sizes = " + ".join(map(str, split["torch_rank_batches"]))
    print(f"  data-parallel over {n} devices; the first global batch of {batch}:")
    print(f"    jax   {jax_sizes} on {', '.join(split['jax_devices'])} (one mesh, sharded)")
    print(f"    torch {torch_sizes} on {split['torch']}")
    for key in ("replicated_note", "batchnorm_note"):
        if key in split:
            print(f"    {split[key]}")
    if "lesson_nn_DataParallel" in split:
        print(f"    {split['lesson_nn_DataParallel']['note']}")


def numpy_by_hand(by_hand):
    """The lesson's numpy version against torch in float64, and why each part differs."""
    vs = by_hand["vs_torch_float64"]
    print(f"  numpy by hand: final loss {json.dumps(by_hand['final_loss'])}")
    loss, params = vs["loss_max_rel_diff"], vs["param_max_rel_diff"]
    if not isinstance(loss, dict):
        loss, params = {"": loss}, {"": params}
    notes = by_hand.get("notes", {})
    for name in loss:
        label = f"{name}: " if name else ""
        print(
            f"    {label}vs torch (float64): losses {loss[name]:.1e}, parameters "
            f"{params[name]:.1e}" + (f"; {notes[name]}" if name in notes else "")
        )


def equivalence_rows(result):
    """The table of equivalences as text, one row a line."""
    out = []
    for row in result["rows"]:
        mark = "ok  " if row["passed"] else "FAIL"
        if row["kind"] == "init":
            std, p = row["std"], row["ks_pvalue"]
            out.append(
                f"  {mark} init {row['name']} on {row['layer']}: std torch {std['torch']:.4g}"
                f" jax {std['jax']:.4g} (expected {row['expected_std']:.4g});"
                f" KS p torch-jax {p['torch_vs_jax']:.2g}"
            )
        else:
            out.append(
                f"  {mark} {row['kind']} {row['name']}: values {row['value_max_rel_diff']:.1e},"
                f" derivatives {row['grad_max_rel_diff']:.1e}"
            )
    return out


def translation(result):
    """``translate``: the source (when not written to a file), where it went, the check."""
    if result.get("source") is not None and result.get("out") is None:
        print(result["source"], end="")
    what = f"{result['target']} -> {result['class_name']} ({result['lines']} lines"
    what += f", {result['translate_seconds']:.1f} s)"
    if result.get("out"):
        what += f": wrote {result['out']}"
    if result.get("weights"):
        what += f"; weights {result['weights']}"
    print(what, file=sys.stderr if result.get("out") is None else sys.stdout)
    if "check" in result:
        print(result["check"]["report"])
