"""Data-parallel training (``--data-parallel N``, compare/parallel/): each side on two
devices equals its single-device run in float64 lockstep (1e-9), and the other side.

JAX shards in this process over the two host devices tests/conftest.py asks for; torch runs
two DistributedDataParallel processes (gloo), started as the CLI starts them. Each torch run
costs two process start-ups (~5-10 s on this machine), so the MNIST schedules are short.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from compare import CompareError, port
from compare.diff import max_rel_diff, tensor_rel_diff
from compare.parallel import fields, launch, torch_ddp
from compare.tutorials import registry
from compare.tutorials.data import first_steps
from compare.tutorials.twins import draw_noise, make_twins, schedule, train_jax, train_torch

FAULTS = Path(__file__).parent / "faults"  # planted in the ranks by plant()
pytestmark = pytest.mark.xdist_group("parallel")  # one worker: the ranks need the cores


def parity(cli, *argv):
    code, out, err = cli("parity", *argv, "--data-parallel", "2", "--json")
    return code, (json.loads(out) if out else None), err


def test_housing_parallel_parity_on_two_devices(cli):
    """The CLI contract: parity's fields then compare the two data-parallel runs, and
    vs_single_device each side's against its single-device run, every step."""
    code, result, err = parity(cli, "housing-parallel", "--dtype", "float64")
    assert code == 0 and result["passed"], err
    assert result["data_parallel"] == 2 and result["tolerance"] == 1e-9
    assert set(result["vs_single_device"]) == {"jax", "torch"}
    assert max(result["vs_single_device"].values()) <= 1e-9
    assert max(result["loss_max_rel_diff"], result["param_max_rel_diff"]) <= 1e-9
    assert max(result["single_device"].values()) <= 1e-9
    split = result["split"]  # the lesson's 64 + 64 of 128; 405 rows: a last batch of 21
    assert split["jax_device_batches"] == split["torch_rank_batches"] == [64, 64]
    assert split["global_batch"] == 128 and result["steps"] == 52
    assert split["replicated_batches"] == 13 and "replicated" in split["replicated_note"]


def on_two_devices(name, steps):
    """``fields.parity_fields`` of a task over its first ``steps`` steps (what parity adds,
    without parity's tiers 1-2 and test-set evaluation, which cost more than the steps)."""
    task = registry.get(name)
    tw = make_twins(task, dtype="float64")
    order = first_steps(schedule(tw, tw.hp.num_epochs), steps)
    noise = draw_noise(tw, order)
    torch_losses, jax_losses = (
        train_torch(tw, order, noise=noise),
        train_jax(tw, order, noise=noise),
    )
    single = {
        "jax": (jax_losses, port.nnx_to_torch(tw.jax_model)),
        "torch": (torch_losses, port.torch_state_dict(tw.torch_model)),
    }
    runs, split = fields.data_parallel_runs(
        tw, order, noise, 2, 0, None, None, tw.hp.num_epochs, steps
    )
    usual = {"loss_max_rel_diff": 0.0, "param_max_rel_diff": 0.0, "passed": True}
    return fields.parity_fields(usual, runs, single, 1e-9), split


# short; mnist-cnn's two launches (30 s) in the slow tier: BatchNorm's and the MLP's cover it
@pytest.mark.parametrize(
    "name, steps", [("mnist-mlp", 12), pytest.param("mnist-cnn", 6, marks=pytest.mark.slow)]
)
def test_two_devices_equal_one_device_and_the_other_side(name, steps):
    fields, split = on_two_devices(name, steps)
    assert fields["passed"], fields
    assert max(fields["vs_single_device"].values()) <= 1e-9
    assert max(fields["loss_max_rel_diff"], fields["param_max_rel_diff"]) <= 1e-9
    assert split["jax_device_batches"] == split["torch_rank_batches"] == [32, 32]


def plant(monkeypatch, fault):
    """``fault`` (tests/faults/sitecustomize.py) in the torch ranks started from here on."""
    monkeypatch.setenv("TWINNETS_FAULT", fault)
    paths = [str(FAULTS), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))


def test_the_gradient_weights_matter(monkeypatch):
    """The proof can fail: with DDP's default all-reduce (the plain average of the ranks'
    mean gradients), the short last batch of 21 = 11 + 10 no longer gets the global batch's
    mean gradient, and the torch side leaves its single-device run."""
    plant(monkeypatch, "ddp-average")
    task = registry.get("housing-parallel")
    tw = make_twins(task, dtype="float64")
    order = schedule(tw, 2)
    losses, state, _ = torch_ddp.train_torch_ddp(
        task.name, 2, "float64", 0, 2, None, tw.hp, None, None
    )
    single = train_torch(tw, order)
    assert max_rel_diff(losses[:3], single[:3]) <= 1e-9  # 64 + 64: the average is the mean
    assert tensor_rel_diff(state, port.torch_state_dict(tw.torch_model)) > 1e-6


def test_batchnorm_statistics_global_in_jax_per_rank_in_torch(cli):
    """JAX's sharded batch statistics are the global batch's: equal to one device. torch DDP
    on CPU normalises each rank's half by its own statistics (SyncBatchNorm needs CUDA): its
    trajectory leaves the single-device one at once, and the output says why."""
    fields, split = on_two_devices("mnist-mlp-bn", 4)
    assert not fields["passed"]
    assert fields["vs_single_device"]["jax"] <= 1e-9
    assert fields["vs_single_device"]["torch"] > 1e-3
    assert "SyncBatchNorm" in split["batchnorm_note"]
    rows = {r["name"]: r for r in json.loads(cli("list", "--json")[1])}
    assert "SyncBatchNorm" in rows["mnist-mlp-bn"]["data_parallel"]["note"]


def test_jax_on_two_processes_equals_one_device(tmp_path):
    """The multi-host path: two processes joined by jax.distributed.initialize (CPU
    collectives: gloo), one device each, each feeding its own rows of every batch."""
    task = registry.get("housing-parallel")
    tw = make_twins(task, dtype="float64")
    order = schedule(tw, 2)
    single = np.asarray(train_jax(tw, order))
    out = tmp_path / "jax.npz"
    argv = launch.worker_args(task.name, "float64", 0, 2, None, tw.hp, None, None, str(out))
    launch.launch("jax", 2, argv, extra_env={"JAX_NUM_CPU_DEVICES": "1"})
    with np.load(out) as f:
        losses, params = f["losses"], {k: f[k] for k in f.files if k != "losses"}
    assert len(losses) == 8
    assert max_rel_diff(losses, single) <= 1e-9
    assert tensor_rel_diff(params, port.nnx_to_torch(tw.jax_model)) <= 1e-9


def test_list_says_which_tasks_cannot_and_why(cli):
    rows = {r["name"]: r["data_parallel"] for r in json.loads(cli("list", "--json")[1])}
    assert rows["housing-parallel"]["supported"] and rows["mnist-cnn"]["supported"]
    assert "full-batch" in rows["regression"]["why_not"]
    assert "batch 1" in rows["pos-tagger"]["why_not"]
    assert "hidden state" in rows["rnn-sincos"]["why_not"]
    assert "two nets" in rows["gan"]["why_not"]
    text = cli("list")[1].split("\n\n")[1]  # the section after the table
    assert text.startswith("--data-parallel N:") and "pos-tagger" in text and "no: batch 1" in text


def one_line(code, out, err, *fragments):
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_input_gets_one_line(cli, tmp_path):
    jax.devices()  # JAX's backend is up: its CPU device count (conftest's 2) is fixed now
    one_line(*cli("parity", "gan", "--data-parallel", "2"), "gan cannot be data-parallel")
    one_line(*cli("run", "regression", "--data-parallel", "2"), "full-batch")
    # 405 rows in batches of 101: the last has one sample, fewer than the 2 devices
    argv = ("--data-parallel", "2", "--set", "batch_size=101", "--out", tmp_path / "r")
    one_line(*cli("run", "housing-parallel", *argv), "a batch of 1 sample(s), fewer than the 2")
    one_line(*cli("parity", "mnist-mlp", "--data-parallel", "5"), "JAX sees 2 device(s)")
    one_line(*cli("bench", "--all", "--data-parallel", "2"), "one TASK, not --all")
    assert not (tmp_path / "r").exists()


def test_a_device_count_no_batch_can_split_ends_at_once_before_jax_starts(cli):
    """A typo (100000 for 10) must not reach JAX, which would start that many host devices:
    one line, exit 2, in well under a second; JAX is never imported."""
    start = time.monotonic()
    one_line(*cli("parity", "mnist-mlp", "--data-parallel", "100000"), "64 samples")
    one_line(*cli("run", "housing-parallel", "--data-parallel", "100000"), "128 samples")
    one_line(*cli("bench", "mnist-cnn", "--data-parallel", "100000"), "64 samples")
    one_line(*cli("bench", "--all", "--data-parallel", "100000"), "one TASK, not --all")
    assert time.monotonic() - start < 1.0
    probe = (
        "import sys\n"
        "from compare.cli import main\n"
        "code = main(['parity', 'mnist-mlp', '--data-parallel', '100000'])\n"
        "assert 'jax' not in sys.modules and 'torch' not in sys.modules, 'a framework started'\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    one_line(done.returncode, done.stdout, done.stderr, "--data-parallel 100000", "64 samples")


def test_a_rank_that_dies_stops_the_run_with_one_line(cli, tmp_path, monkeypatch):
    plant(monkeypatch, "exit:1:2")  # rank 1 exits at its third step
    out_dir = tmp_path / "run"
    code, out, err = cli("run", "housing-parallel", "--quick", "--no-progress", "--out", out_dir)
    one_line(code, out, err, "torch rank 1 of 2 exited with status 3", "nothing was written")
    assert list(tmp_path.iterdir()) == []  # no output directory, no staging left behind


@pytest.mark.slow  # four timed runs, two of them process launches: ~40 s for a timing demo
def test_bench_reports_each_side_on_one_and_on_n_devices(cli):
    code, out, err = cli(
        "bench", "housing-parallel", "--data-parallel", "2", "--quick", "--repeats", "1", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["data_parallel"] == 2 and result["per_device_batch"] == [64, 64]
    rows = {(r["framework"], r["devices"]): r for r in result["rows"]}
    assert set(rows) == {("jax", 1), ("jax", 2), ("torch", 1), ("torch", 2)}
    for framework in ("jax", "torch"):
        one, two = rows[(framework, 1)], rows[(framework, 2)]
        assert one["efficiency"] == 1.0
        assert two["efficiency"] == pytest.approx(two["steps_per_s"] / one["steps_per_s"] / 2)
        assert two["samples_per_s"] == pytest.approx(two["steps_per_s"] * 128)


def test_a_rank_that_never_joins_stops_the_others_at_once(monkeypatch):
    """Rank 0 waits in init_process_group for a rank that exited before joining: the
    launcher sees the exit and stops it, long before the collectives' time-out."""
    plant(monkeypatch, "never-joins:1")
    monkeypatch.setenv("TWINNETS_DIST_TIMEOUT", "600")
    hp = registry.get("housing-parallel").hp
    start = time.monotonic()
    with pytest.raises(CompareError, match="torch rank 1 of 2 exited with status 4"):
        torch_ddp.train_torch_ddp("housing-parallel", 2, "float64", 0, 1, 2, hp, None, None)
    assert time.monotonic() - start < 120
