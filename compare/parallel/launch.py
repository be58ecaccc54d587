"""Starting the ranks of a data-parallel run, and what they are handed.

``launch`` starts N local processes of ``python -m compare.parallel KIND ...`` (each with the
environment a cluster launcher would set: torchrun's for torch, ``jax.distributed``'s for
JAX), waits for all, and ends in one ``CompareError`` line when any fails, the others stopped:
none hangs. The hyperparameters travel as JSON (``hp_to_json``); rank 0 writes its result as
one ``.npz``, complete or absent (``write_npz``).
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from compare.errors import CompareError

TIMEOUT_S = float(os.environ.get("TWINNETS_DIST_TIMEOUT", "120"))  # a collective's time-out


def write_npz(path, **arrays):
    """Complete or absent: written aside, then renamed."""
    out = Path(path)
    tmp = out.with_name(f".{out.name}.partial")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, out)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hp_to_json(hp):
    return json.dumps(dataclasses.asdict(hp))


def hp_from_json(task, text):
    """The hyperparameters a launcher handed over (``hp_to_json``), or the task's own."""
    if not text:
        return task.hp
    fields = json.loads(text)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return dataclasses.replace(task.hp, **fields)


def worker_args(task, dtype, seed, epochs, steps, hp, init_from, data_dir, out, extra=()):
    argv = [task, "--dtype", dtype, "--seed", str(seed), "--epochs", str(epochs), "--out", out]
    argv += ["--hp", hp_to_json(hp), *extra]
    if steps:
        argv += ["--steps", str(steps)]
    if init_from:
        argv += ["--init-from", str(init_from)]
    if data_dir:
        argv += ["--data-dir", str(data_dir)]
    return argv


def launch(kind, n, argv, timeout=None, extra_env=None):
    """Start ``n`` local processes of ``python -m compare.parallel KIND ...`` (each as a
    launcher would: RANK etc. for torch, JAX_PROCESS_ID etc. for JAX), wait for them all, and
    raise one CompareError line when any fails: the others are stopped, none hangs."""
    timeout = timeout or float(os.environ.get("TWINNETS_LAUNCH_TIMEOUT", "1800"))
    port = _free_port()
    root = str(Path(__file__).resolve().parents[2])
    threads = max(1, (os.cpu_count() or 1) // n)
    procs, logs = [], []
    with tempfile.TemporaryDirectory(prefix="twinnets-ranks-") as tmp:
        for rank in range(n):
            env = dict(os.environ, **(extra_env or {}))
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
            env.setdefault("OMP_NUM_THREADS", str(threads))
            if kind == "torch":
                env.update(
                    RANK=str(rank),
                    LOCAL_RANK=str(rank),
                    WORLD_SIZE=str(n),
                    MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=str(port),
                    TWINNETS_INIT=f"file://{tmp}/store",
                )
            else:
                env.update(
                    JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                    JAX_NUM_PROCESSES=str(n),
                    JAX_PROCESS_ID=str(rank),
                )
            log = open(Path(tmp) / f"rank{rank}.log", "w+")
            logs.append(log)
            cmd = [sys.executable, "-m", "compare.parallel", kind, *argv]
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        failed = None
        try:
            while any(p.poll() is None for p in procs):
                failed = next((r for r, p in enumerate(procs) if p.poll() not in (None, 0)), None)
                if failed is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            else:
                failed = next((r for r, p in enumerate(procs) if p.returncode != 0), None)
        finally:
            for p in procs:  # the ranks still waiting on a dead one
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if failed is None and any(p.returncode != 0 for p in procs):
            failed = next(r for r, p in enumerate(procs) if p.returncode != 0)
        if failed is None:
            return
        code = procs[failed].returncode
        logs[failed].seek(0)
        lines = [line.strip() for line in logs[failed].read().splitlines() if line.strip()]
        last = lines[-1] if lines else "no output"
        if code is None or code < 0 and time.monotonic() > deadline:
            raise CompareError(
                f"--data-parallel {n}: the {kind} ranks did not finish in {timeout:.0f} s"
            )
        raise CompareError(
            f"--data-parallel {n}: {kind} rank {failed} of {n} exited with status {code} "
            f"({last[:200]}); the other ranks were stopped, nothing was written"
        )
