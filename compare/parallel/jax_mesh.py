"""The JAX side on N devices: one ``Mesh``, every global batch sharded along ``"data"``.

The model and optimizer state are replicated (``P()``); the tutorial's own jitted
``train_step`` runs inside one ``lax.scan`` per run of equal batches, as on one device, and XLA
partitions it: the batch mean of the loss (and BatchNorm's batch statistics) become an
all-reduce over the devices. On CPU the N devices are host devices (``jax_num_cpu_devices``,
set before JAX starts: ``set_jax_devices``); on several hosts ``jax.distributed.initialize``
joins them and each process feeds its own rows (``jax_worker``).
"""

import functools
import os

import numpy as np

from compare.arrays import cast, to_flax_layout
from compare.diff import check_finite
from compare.errors import CompareError
from compare.parallel.launch import TIMEOUT_S, hp_from_json, write_npz
from compare.tutorials import data, registry


def set_jax_devices(n):
    """Ask for ``n`` host devices on CPU; must run before JAX's backend starts (the CLI calls
    it first thing). Elsewhere (GPUs) the devices are what the machine has."""
    import jax

    try:
        if int(jax.config.jax_num_cpu_devices or 0) < n:
            jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # the backend is already up: mesh() says what there is
        pass


def mesh(n):
    """A 1-d ``Mesh`` named ``"data"`` over the first ``n`` devices (all processes')."""
    import jax
    from jax.sharding import Mesh

    devices = jax.devices()
    if len(devices) < n:
        raise CompareError(
            f"--data-parallel {n}: JAX sees {len(devices)} device(s) "
            f"({jax.default_backend()}); on CPU the count is fixed when JAX starts "
            "(jax_num_cpu_devices)"
        )
    return Mesh(np.array(devices[:n]), ("data",))


def _put(array, sharding):
    """``array`` (the same numpy array in every process) as a global array: this process
    feeds the rows its devices hold (all of them in a single process)."""
    import jax

    array = np.asarray(array)
    spec = sharding.spec
    if len(spec) < 2 or spec[1] is None or jax.process_count() == 1:
        local = array
    else:  # axis 1 (the batch) split evenly over the processes, in process order
        rows = array.shape[1] // jax.process_count()
        start = jax.process_index() * rows
        local = array[:, start : start + rows]
    return jax.make_array_from_process_local_data(sharding, local, array.shape)


def _put_state(value, sharding):
    """A model or optimizer leaf replicated over the mesh; an RNG key through its key data."""
    import jax

    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        data = _put(np.asarray(jax.random.key_data(value)), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
    return _put(value, sharding)


@functools.cache
def _scan_sharded():
    """The jitted whole-run scan over batches already on the mesh (built once).

    ``jaxnets._train._scan_batches``'s twin, but fed the gathered batches, not indices into
    the data set: gathered outside, each batch is put on the mesh row-sharded (and, across
    processes, each process feeds only its rows); a gather inside the scan would leave the
    batch's layout to XLA's propagation."""
    import jax
    from flax import nnx

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def scan(train_step, graphdef, state, xs, ys, noise):
        def body(state, batch):
            xb, yb, step_noise = batch  # one global batch, sharded along "data"
            model, optimizer = nnx.merge(graphdef, state)
            noise_args = () if step_noise is None else (step_noise,)
            loss = train_step(model, optimizer, xb, yb, *noise_args)
            return nnx.state((model, optimizer)), loss

        return jax.lax.scan(body, state, (xs, ys, noise))

    return scan


def train_jax_sharded(twins, order, data_mesh, noise=None, progress=False, **_):
    """The JAX side over ``order`` on ``data_mesh``: like ``compare.tutorials.twins.train_jax``
    (the same tutorial step in a jitted scan) with each global batch sharded over the mesh and
    the state replicated. Returns ``(losses, info)``; ``info`` counts the sharded and the
    replicated batches and gives the per-device sizes of the first batch."""
    import jax
    from flax import nnx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from compare.toolkit.engine import DTYPES
    from compare.tutorials.twins import NOTHING_WRITTEN

    scan = _scan_sharded()
    n = data_mesh.size
    np_dtype = DTYPES[twins.dtype][0]
    module, model, optimizer = twins.jax_module, twins.jax_model, twins.jax_optimizer
    x = to_flax_layout(cast(twins.arrays["x"], np_dtype))  # images: NCHW -> NHWC, once
    y = cast(twins.arrays["y"], np_dtype)
    replicated = NamedSharding(data_mesh, P())
    graphdef, state = nnx.split((model, optimizer))
    state = jax.tree.map(lambda a: _put_state(a, replicated), state)
    model.train()
    losses, info = [], {"sharded_batches": 0, "replicated_batches": 0}
    for number, epoch in enumerate(order):
        step = 0
        while step < len(epoch):  # runs of equal-sized batches, each one scan
            size = len(epoch[step])
            end = step
            while end < len(epoch) and len(epoch[end]) == size:
                end += 1
            idx = np.stack(epoch[step:end])  # (steps, size)
            split = size % n == 0
            sharding = NamedSharding(data_mesh, P(None, "data") if split else P())
            xs, ys = _put(x[idx], sharding), _put(y[idx], sharding)
            run_noise = None
            if noise is not None:
                run_noise = {
                    k: _put(
                        np.stack([cast(s[k], np_dtype) for s in noise[number][step:end]]), sharding
                    )
                    for k in noise[number][step]
                }
            if "first_batch" not in info:
                info["first_batch"] = size
                info["jax_device_batches"] = [
                    int(s.data.shape[1])
                    for s in sorted(xs.addressable_shards, key=lambda s: s.device.id)
                ]
            state, chunk = scan(module.train_step, graphdef, state, xs, ys, run_noise)
            chunk = np.asarray(chunk.addressable_data(0))
            check_finite(
                chunk, "jax", sum(map(len, losses)), after=NOTHING_WRITTEN, task=twins.task.name
            )
            losses.append(chunk)
            info["sharded_batches" if split else "replicated_batches"] += end - step
            step = end
    # back on one device: the evaluation and pictures use the model as usual
    state = jax.tree.map(lambda a: a.addressable_data(0), state)
    nnx.update((model, optimizer), state)
    return np.concatenate(losses), info


def jax_worker(args):
    """One process of the JAX side on several processes: ``jax.distributed.initialize`` from
    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (CPU collectives: gloo), the
    mesh over every process's devices, each process feeding its own rows."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]),
        initialization_timeout=int(TIMEOUT_S),
    )
    from compare import port
    from compare.tutorials.twins import draw_noise, make_twins, schedule

    task = registry.get(args.task)
    hp = hp_from_json(task, args.hp)
    tw = make_twins(
        task,
        dtype=args.dtype,
        seed=args.seed,
        init_from=args.init_from,
        hp=hp,
        data_dir=args.data_dir,
    )
    order = schedule(tw, args.epochs, seed=args.seed)
    if args.steps:
        order = data.first_steps(order, args.steps)
    noise = draw_noise(tw, order, seed=args.seed)
    losses, info = train_jax_sharded(tw, order, mesh(len(jax.devices())), noise=noise)
    if jax.process_index() == 0:
        write_npz(args.out, losses=losses, **port.nnx_to_torch(tw.jax_model))
    jax.distributed.shutdown()
