"""The bench verb: every variant named and run (or skipped/failed with a reason), numbers that
agree with each other, files written safely, one-line errors. No speed is asserted: the CPU
here is shared and `--quick` times a handful of steps."""

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from compare import bench
from compare.tutorials import registry

# one pytest-xdist worker for the module: its fixture's bench runs once, not once per worker
pytestmark = pytest.mark.xdist_group("bench")
ROOT = Path(__file__).resolve().parents[1]
ROW_FIELDS = {
    "status",
    "steps_per_s",
    "samples_per_s",
    "ratio",
    "compile_s",
    "warmup_s",
    "median_s",
    "min_s",
    "max_s",
    "seconds",
}


@pytest.fixture(scope="session")  # once per worker: xdist interleaves modules
def mnist_mlp():
    """What the issue checks, run as a user runs it: a fresh process, JSON on stdout."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.run(
        [sys.executable, "-m", "compare", "bench", "mnist-mlp", "--quick", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_quick_json_names_every_variant_with_its_numbers(mnist_mlp):
    assert list(mnist_mlp["variants"]) == list(bench.VARIANTS)
    for name, row in mnist_mlp["variants"].items():
        assert row["status"] in ("ran", "skipped", "failed"), name
        if row["status"] == "ran":
            assert ROW_FIELDS <= set(row), name
            assert row["steps_per_s"] > 0 and row["compile_s"] >= 0 and row["warmup_s"] > 0
            assert len(row["seconds"]) == mnist_mlp["repeats"] == 2
            assert math.isfinite(row["last_loss"]), name
        else:
            assert row["reason"] and "\n" not in row["reason"] and row["ratio"] is None
    ran = {n for n, r in mnist_mlp["variants"].items() if r["status"] == "ran"}
    assert {"torch-eager", "jax-nnx-jit", "jax-steps", "jax-scan", "lesson"} <= ran
    # CUDA graphs only on a GPU; torch.compile may fail (no C compiler), never crash the bench
    assert mnist_mlp["variants"]["torch-cudagraphs"]["status"] == "skipped"


def test_every_variant_trained_the_same_steps_from_the_same_weights(mnist_mlp):
    rows = mnist_mlp["variants"]
    reference = rows["torch-eager"]["last_loss"]
    for name in bench.TORCH_VARIANTS + bench.JAX_VARIANTS:  # the lesson shuffles its own way
        if rows[name]["status"] == "ran":
            assert rows[name]["last_loss"] == pytest.approx(reference, rel=1e-4), name


def test_quick_json_reports_the_setting(mnist_mlp):
    r = mnist_mlp
    assert r["task"] == "mnist-mlp" and r["quick"] and r["dtype"] == "float32"
    assert r["batch_size"] == r["samples_per_step"] == 64 and r["steps"] == bench.QUICK_STEPS
    assert r["precision"]["jax"]["jax_default_matmul_precision"] == "highest"
    assert r["precision"]["torch"]["torch.backends.cuda.matmul.allow_tf32"] is False
    assert set(r["device"]) == {"torch", "jax"} and all(r["device"].values())
    assert {"python", "jax", "flax", "optax", "torch"} <= set(r["versions"])
    assert r["git"] and r["date"] and r["command"].startswith("python -m compare bench mnist-mlp")


def test_ratios_agree_with_the_steps_per_second(mnist_mlp):
    rows = mnist_mlp["variants"]
    best = mnist_mlp["best_torch"]
    assert best in bench.TORCH_VARIANTS and rows[best]["ratio"] == 1.0
    torch_ran = [n for n in bench.TORCH_VARIANTS if rows[n]["status"] == "ran"]
    assert rows[best]["steps_per_s"] == max(rows[n]["steps_per_s"] for n in torch_ran)
    for row in rows.values():
        if row["status"] == "ran":
            assert row["ratio"] == pytest.approx(row["steps_per_s"] / rows[best]["steps_per_s"])
            assert row["samples_per_s"] == pytest.approx(64 * row["steps_per_s"])
            assert row["steps_per_s"] == pytest.approx(mnist_mlp["steps"] / row["median_s"])
            assert row["min_s"] <= row["median_s"] <= row["max_s"]


def test_markdown_holds_the_table(mnist_mlp):
    text = bench.markdown(mnist_mlp)
    assert mnist_mlp["command"] in text
    assert "| variant | steps/s | samples/s | ratio to best torch |" in text
    for name in bench.VARIANTS:
        assert f"| {name} |" in text
    assert "(best torch)" in text


def test_full_batch_task_prints_markdown_and_writes_its_files(cli, tmp_path):
    out = tmp_path / "bench"
    code, stdout, _ = cli("bench", "regression", "--quick", "--out", out)
    assert code == 0
    assert (
        "| torch-eager |" in stdout
        and "| jax-scan |" in stdout
        and "full (100 samples/step)" in stdout
    )
    result = json.loads((out / "bench.json").read_text())
    assert result["batch_size"] is None and result["samples_per_step"] == 100
    scan = result["variants"]["jax-scan"]
    assert scan["status"] == "ran" and scan["samples_per_s"] == pytest.approx(
        100 * scan["steps_per_s"]
    )
    assert (out / "bench.md").read_text().startswith("### regression")
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]  # no staging left behind


@pytest.mark.parametrize(
    "argv, message",
    [
        (("bench", "no-such-task", "--quick"), "unknown task 'no-such-task'"),
        (("bench", "--quick"), "a TASK or --all"),
        (("bench", "regression", "--all"), "a TASK or --all"),
        (("bench", "regression", "--repeats", "0"), "--repeats must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_two(cli, argv, message):
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_asking_for_a_missing_gpu_is_one_line_and_exit_two(cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    code, out, err = cli("bench", "regression", "--quick", "--device", "cuda", "--no-progress")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: regression: torch bench: --device cuda: torch sees no CUDA")


def test_a_step_the_bench_cannot_feed_is_named_with_the_fix():
    def train_step(model, optimizer, x, y, eps):  # a VAE-like step: noise drawn outside
        return 0.0

    side = types.SimpleNamespace(train_step=train_step)
    task = types.SimpleNamespace(name="vae-like", modules=lambda: (side, side))
    reason = bench.Adapter().unsupported(task)
    assert "(model, optimizer, x, y, eps)" in reason and "ADAPTERS" in reason


def test_all_tables_every_task_skips_what_it_cannot_run_and_plots(
    cli, tmp_path, monkeypatch, mnist_mlp
):
    names = list(registry.TASKS)
    cannot = names[-1]

    class Picky(bench.Adapter):
        def unsupported(self, task):
            return "its step takes noise" if task.name == cannot else None

    def fake_bench_task(name, opts, progress=False):  # no children: the merge is tested above
        return dict(mnist_mlp, task=name)

    monkeypatch.setattr(bench, "adapter_for", lambda task: Picky())
    monkeypatch.setattr(bench, "bench_task", fake_bench_task)
    out = tmp_path / "all"
    code, stdout, _ = cli("bench", "--all", "--quick", "--out", out)
    assert code == 0
    assert "| task | batch | torch-eager |" in stdout
    for name in names[:-1]:
        assert f"| {name} | 64 |" in stdout and f"### {name}" in stdout
    assert f"| {cannot} | - | skipped: its step takes noise |" in stdout
    payload = json.loads((out / "bench.json").read_text())
    assert [r["task"] for r in payload["tasks"]] == names[:-1]
    assert payload["skipped"] == {cannot: "its step takes noise"}
    assert payload["command"].startswith("python -m compare bench --all --quick")
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.gpu
def test_on_a_gpu_every_variant_runs_on_it(cli):
    import jax
    import torch

    if not torch.cuda.is_available() or jax.default_backend() != "gpu":
        pytest.skip("needs a CUDA device for both torch and JAX")
    code, out, _ = cli("bench", "mnist-cnn", "--quick", "--device", "cuda", "--json")
    result = json.loads(out)
    assert code == 0 and result["device_kind"] == {"torch": "cuda", "jax": "cuda"}
    for name in bench.VARIANTS:
        assert result["variants"][name]["status"] == "ran", (name, result["variants"][name])


@pytest.mark.parametrize("name", sorted(registry.TASKS))
def test_every_torch_step_stays_on_its_models_device(name):
    """A tensor a step makes for itself (a GAN's noise and labels, a class weight) is made on
    the batch's device: on an H200 the GANs' torch variants all failed with "mat1 is on cpu".
    The meta device stands in for CUDA here: it runs no arithmetic and mixes with no CPU
    tensor."""
    import copy

    import torch

    from compare.tutorials.twins import make_twins

    twins = make_twins(registry.get(name), dtype="float32", seed=0)
    model = copy.deepcopy(twins.torch_model).to("meta")
    optimizer = twins.torch_module.new_optimizer(model, twins.hp)
    x, y = (twins.torch_arrays[k][:4].to("meta") for k in ("x", "y"))
    out = twins.torch_module.train_step(model, optimizer, x, y)
    assert all(t.device == torch.device("meta") for t in torch.utils._pytree.tree_leaves(out))


def test_cuda_graphs_see_the_optimizers_state_made_before_they_record():
    """SGD makes its momentum buffers inside its first step; recorded into a CUDA graph they are
    its outputs, overwritten by the next replay (on an H200: "accessing tensor output of
    CUDAGraphs that has been overwritten"). ``prime`` takes that first step eagerly."""
    import copy

    from compare.bench.torch_worker import prime
    from compare.tutorials.twins import make_twins

    twins = make_twins(registry.get("mnist-cnn"), dtype="float32", seed=0)
    model = copy.deepcopy(twins.torch_model)
    optimizer = twins.torch_module.new_optimizer(model, twins.hp)
    params = list(model.parameters())
    assert not any("momentum_buffer" in optimizer.state[p] for p in params)
    x, y = twins.torch_arrays["x"][:8], twins.torch_arrays["y"][:8]
    prime(twins.torch_module.train_step, model, optimizer, (x, y))
    assert all("momentum_buffer" in optimizer.state[p] for p in params)


def test_time_in_turns_runs_each_variant_once_a_round_and_times_each_alone():
    import time

    from compare.bench.timing import time_in_turns

    calls = []

    def run(name, pause):
        def block():
            calls.append(name)
            time.sleep(pause)

        return block

    seconds = time_in_turns({"slow": run("slow", 0.02), "fast": run("fast", 0.0)}, 3)
    assert calls == ["slow", "fast"] * 3  # in turns, not one variant's rounds after another's
    assert [len(s) for s in seconds.values()] == [3, 3]
    assert min(seconds["slow"]) >= 0.02 > max(seconds["fast"])
